"""Stock django-tenants' database backend (session-level SET search_path), for control runs."""

from platform_site.settings import *  # noqa: F403

DATABASES["default"]["ENGINE"] = "django_tenants.postgresql_backend"  # noqa: F405
