from django.apps import AppConfig
from django.db.models.signals import post_migrate


class CoreConfig(AppConfig):
    """Platform-wide pieces every app builds on: audit trail, errors, commands, roles, crypto."""

    name = "core"
    verbose_name = "Platform"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Connects the login audit receivers (core.login) and TOTP secret sealing (core.two_factor).
        import core.two_factor  # noqa: F401
        from core.roles import roles_sync_after_migrate

        # Staff groups follow the code: every migrate of the public schema re-applies them.
        post_migrate.connect(roles_sync_after_migrate, sender=self, dispatch_uid="core.roles_sync")
