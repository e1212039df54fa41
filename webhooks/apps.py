from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"
    verbose_name = "Webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from core.audit import audit_recorded
        from webhooks.receivers import audit_event_recorded

        # The one hook: every audit event passes here; mapped ones become webhook messages.
        audit_recorded.connect(audit_event_recorded, dispatch_uid="webhooks.audit_event_recorded")
