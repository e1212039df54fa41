from core.commands import PlatformCommand
from core.roles import roles_sync


class Command(PlatformCommand):
    help = 'Create or correct the staff groups "Platform operators" and "Platform support".'

    def run(self, *args, **options):
        counts = roles_sync()
        self.stdout.write(
            "Roles synced: " + ", ".join(f"{name} ({n} permissions)" for name, n in counts.items())
        )
