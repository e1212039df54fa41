"""Send a test notification through one channel now; exit 1 when it cannot be delivered."""

from django.core.management.base import CommandError

from core.commands import PlatformCommand
from monitoring.models import Channel, Delivery
from monitoring.services.alerts import alert_test_send


class Command(PlatformCommand):
    help = "Send a test alert through the named channel (with its retries), and report the outcome."

    def add_arguments(self, parser):
        parser.add_argument("channel", help="the channel's name (see the admin's channel list)")

    def run(self, *args, **options):
        name = options["channel"].strip()
        channel = Channel.objects.filter(name=name).first()
        if channel is None:
            known = ", ".join(Channel.objects.values_list("name", flat=True)) or "none yet"
            raise CommandError(f"No channel named {name!r} (channels: {known}).")
        delivery = alert_test_send(channel=channel, actor=self.actor)
        if delivery.status != Delivery.Status.SENT:
            attempts = f"{delivery.attempts} attempt(s)"
            raise CommandError(f"test alert to {channel.name} failed after {attempts}: {delivery.last_error}")
        code = f" (HTTP {delivery.response_code})" if delivery.response_code else ""
        self.stdout.write(f"test alert sent to {channel.name}{code} after {delivery.attempts} attempt(s)")
