from django.apps import AppConfig
from django.db.models.signals import post_migrate


class TenantsConfig(AppConfig):
    name = "tenants"
    verbose_name = "Tenancy"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from tenants.roles import roles_sync_after_migrate

        # Staff groups follow the code: every migrate of the public schema re-applies them.
        post_migrate.connect(roles_sync_after_migrate, sender=self, dispatch_uid="tenants.roles_sync")
