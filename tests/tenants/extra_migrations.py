"""Temporary extra migrations for an app, for tests and benchmarks; leaves no file behind.

The app's migrations are copied into a package in a temporary folder, the extra ones are added,
and MIGRATION_MODULES points the app at that package for the duration.
"""

import shutil
import sys
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

from django.apps import apps
from django.db import connection
from django.test.utils import override_settings
from django_tenants.utils import get_public_schema_name, quote_schema_name

from tenants import migration_state


def _forget_expected() -> None:
    migration_state.expected_migration_keys.cache_clear()
    migration_state.expected_migration_fingerprint.cache_clear()


@contextmanager
def extra_migrations(app_label: str, migrations: dict[str, str]):
    """Add ``{name: source}`` migrations to ``app_label`` while the block runs.

    On exit the public schema forgets them too (tenant schemas are the caller's to drop).
    """
    source_dir = Path(apps.get_app_config(app_label).path) / "migrations"
    package = f"_extra_migrations_{uuid.uuid4().hex[:12]}"
    root = Path(tempfile.mkdtemp(prefix="extra-migrations-"))
    target = root / package
    target.mkdir()
    (target / "__init__.py").write_text("")
    for path in source_dir.glob("[0-9]*.py"):
        shutil.copy(path, target / path.name)
    for name, source in migrations.items():
        (target / f"{name}.py").write_text(source)
    sys.path.insert(0, str(root))
    try:
        with override_settings(MIGRATION_MODULES={app_label: package}):
            _forget_expected()
            yield package
    finally:
        sys.path.remove(str(root))
        for module in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
            del sys.modules[module]
        shutil.rmtree(root, ignore_errors=True)
        _forget_expected()
        connection.set_schema_to_public()
        with connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {quote_schema_name(get_public_schema_name())}.django_migrations "
                "WHERE app = %s AND name = ANY(%s)",
                [app_label, list(migrations)],
            )


ADD_FIELD = '''
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("storefront", "{previous}")]
    operations = [
        migrations.AddField("product", "{field}", models.CharField(max_length=40, default="", blank=True)),
    ]
'''


def add_field_migration(previous: str = "0001_initial", field: str = "extra_note") -> str:
    """One trivial migration: a column with a constant default on storefront's Product."""
    return ADD_FIELD.format(previous=previous, field=field)
