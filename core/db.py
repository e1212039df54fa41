"""The default database connection, typed as what it is: django-tenants' wrapper.

django-stubs types ``django.db.connection`` as Django's base wrapper, which has no
``set_tenant``, ``set_schema_to_public`` or ``schema_name``; import it from here instead.
"""

from typing import TYPE_CHECKING, cast

from django.db import connection as _connection

if TYPE_CHECKING:
    from django_tenants.postgresql_backend.base import DatabaseWrapper as TenantDatabaseWrapper

connection = cast("TenantDatabaseWrapper", _connection)
