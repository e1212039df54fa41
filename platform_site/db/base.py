"""PostgreSQL backend: django-tenants' schema switching, safe behind transaction pooling.

Stock django-tenants issues ``SET search_path`` as its own statement when it hands out a cursor.
Behind PgBouncer in transaction mode (or RDS Proxy) that SET and the next query can run on
different server connections, so one tenant reads another's rows (django-tenants #1112, #732).

Here every statement carries its own search_path in the same protocol message:
``SET search_path = "t", "public"; <query>``. A multi-statement simple-protocol message is a
single implicit transaction, which a transaction pooler never splits, so the path and the query
always meet on the same server connection. It also costs no extra round trip.
"""

from functools import lru_cache
from typing import TYPE_CHECKING

from django.core.exceptions import ImproperlyConfigured
from django.db.backends.postgresql import base as postgresql_base
from django_tenants.postgresql_backend import base as tenants_base
from django_tenants.utils import quote_schema_name
from psycopg import sql

if TYPE_CHECKING:
    # django-stubs does not declare the backend's Cursor; at runtime it is psycopg's ClientCursor
    # with Django's CursorMixin (client-side binding), which is what this module relies on.
    from psycopg import ClientCursor as _ClientCursor
else:
    _ClientCursor = postgresql_base.Cursor

# Statements PostgreSQL refuses inside a transaction block, which a multi-statement message is.
_STANDALONE_HEADS = ("VACUUM", "CREATE DATABASE", "DROP DATABASE", "ALTER SYSTEM", "CREATE TABLESPACE",
                     "DROP TABLESPACE", "ALTER DATABASE")


# Transaction control: these resolve no names, and only mean something inside a transaction,
# which a transaction pooler never splits, so they need no path. They must not carry one either:
# in a transaction aborted by an error the SET itself fails, and the ROLLBACK TO SAVEPOINT
# behind it in the same message never runs (the outer atomic block is then lost too).
_UNPINNED_HEADS = ("SAVEPOINT", "RELEASE", "ROLLBACK", "COMMIT")


def _is_transaction_control(query: str) -> bool:
    return query.lstrip()[:9].upper().startswith(_UNPINNED_HEADS)


def _must_run_alone(query: str) -> bool:
    head = " ".join(query[:80].split()).upper()
    if head.startswith(_STANDALONE_HEADS):
        return True
    return head.startswith(("CREATE", "DROP", "REINDEX")) and "CONCURRENTLY" in query.upper()


class SchemaPinnedCursor(_ClientCursor):
    """A client-side-binding cursor that prefixes each statement with the wrapper's search_path."""

    search_path_sql = ""

    def execute(self, query, params=None, **kwargs):
        prefix = self.search_path_sql
        if not prefix:
            return super().execute(query, params, **kwargs)
        if isinstance(query, sql.Composable):
            query = query.as_string(self)
        elif isinstance(query, bytes):
            query = query.decode()
        if _is_transaction_control(query):
            return super().execute(query, params, **kwargs)
        if _must_run_alone(query):
            # Cannot share a message with the SET. Such maintenance statements belong on a direct
            # connection (migrations, admin scripts), not behind a transaction pooler.
            super().execute(prefix.rstrip("; "))
            return super().execute(query, params, **kwargs)
        if params is not None:
            prefix = prefix.replace("%", "%%")
        super().execute(prefix + query, params, **kwargs)
        # The first result is the SET's; callers want the query's.
        self.nextset()
        return self

    def executemany(self, query, params_seq, **kwargs):
        # psycopg runs executemany in pipeline mode (extended protocol), which refuses two
        # statements in one message; one pinned execute per row keeps the guarantee.
        if not self.search_path_sql:
            return super().executemany(query, params_seq, **kwargs)
        for params in params_seq:
            self.execute(query, params)


@lru_cache(maxsize=4096)
def search_path_statement(search_paths: tuple[str, ...]) -> str:
    return "SET search_path = {}; ".format(", ".join(quote_schema_name(s) for s in search_paths))


class DatabaseWrapper(tenants_base.DatabaseWrapper):
    def get_new_connection(self, conn_params):
        if self.settings_dict["OPTIONS"].get("server_side_binding"):
            raise ImproperlyConfigured(
                "server_side_binding cannot carry the tenant search_path with each statement; "
                "remove it from DATABASES['default']['OPTIONS']."
            )
        connection = super().get_new_connection(conn_params)
        connection.cursor_factory = SchemaPinnedCursor
        return connection

    def _cursor(self, name=None):
        if name:
            # A server-side cursor takes one statement only: fall back to django-tenants' own SET
            # (settings disable server-side cursors, so Django itself never asks for one).
            return super()._cursor(name=name)
        # Skips django-tenants' _cursor (its SET): Django's own, which django-stubs does not declare.
        cursor = postgresql_base.DatabaseWrapper._cursor(self)  # type: ignore[attr-defined]
        cursor.cursor.search_path_sql = search_path_statement(tuple(self._get_cursor_search_paths()))
        return cursor
