"""Spares built by replaying captured SQL: the same as migrated ones, recaptured when the
migrations change, refused when they cannot be replayed, and never carrying a shop's data."""

import re

import pytest
from django.db import connection, transaction
from django.test.utils import override_settings
from django_tenants.utils import schema_exists

from tenants import schema_template, services
from tenants.migration_state import expected_migration_keys, schema_is_current
from tenants.models import SchemaPoolEntry, SchemaTemplate
from tenants.schema_catalog import catalog_differences, schema_catalog
from tenants.schema_pool import pool_claim, pool_fill, pool_schema_migrate, pool_spares_build
from tenants.schema_template import SchemaTemplateError, Template, replay_spares, replay_sql, template_current
from tests.conftest import TEST_ACTOR, database_url_for_subprocesses
from tests.tenants.extra_migrations import add_field_migration, extra_migrations
from tests.warm_pool import WarmPool

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.empty_pool]


def spares() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT nspname FROM pg_namespace WHERE starts_with(nspname, '_pool_')")
        return {name for (name,) in cursor.fetchall()}


def forget_template(*, stored: bool = True) -> None:
    """As a new process would start (nothing captured in memory); and, with ``stored``, as a
    database that never had a capture."""
    schema_template._loaded.clear()
    if stored:
        SchemaTemplate.objects.all().delete()


def rows(schema: str, table: str) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT * FROM "{schema}"."{table}" ORDER BY 1')
        return cursor.fetchall()


def test_replayed_spare_is_the_migrated_schema_catalog_and_rows():
    forget_template()
    migrated = pool_schema_migrate()
    captured = pool_spares_build(count=1)  # captures (two spares), from the store from now on
    assert len(captured) == 2 and SchemaTemplate.objects.get().refused == ""
    forget_template(stored=False)
    (replayed,) = pool_spares_build(count=1)
    assert replayed not in captured

    expected, got = schema_catalog(migrated), schema_catalog(replayed)
    assert catalog_differences(expected, got) == []
    assert expected == got
    # What the comparison covers, so that an empty catalog cannot pass for an equal one.
    assert {"storefront_product", "auth_user", "django_content_type"} <= {r[0] for r in got["relations"]}
    assert len(got["django_migrations"]) == len(expected_migration_keys())
    assert any(row[0] == "auth_permission" and row[1] > 0 for row in got["data"])
    assert any(row[0] == "auth_permission_id_seq" and row[8] for row in got["sequences"])
    assert schema_is_current(replayed)
    # Tables are replayed in their final shape, not through the history of ALTERs: contenttypes
    # 0002 drops django_content_type.name, which the replayed table never had.
    script = template_current().script
    assert "CREATE TABLE" in script and "ALTER COLUMN" not in script and "DROP COLUMN" not in script
    content_type = sorted((r[1], r[2]) for r in got["columns"] if r[0] == "django_content_type")
    assert [name for _, name in content_type] == ["id", "app_label", "model"]
    assert got["schema"] and got["relations"][0][7]  # owners and grants are compared too

    # An independent witness: pg_dump of both, the names swapped, must be the same text.
    # (When each migration was applied differs, as between any two migrated schemas.)
    def dump(name: str) -> str:
        text = WarmPool(database_url_for_subprocesses())._dump(name).replace(name, "{s}")
        return re.sub(r"(django_migrations VALUES .*)'[-0-9 :.+]+'\);", r"\1'T');", text)

    assert "CREATE TABLE {s}.storefront_product" in dump(replayed)
    assert dump(replayed) == dump(migrated)


def test_a_new_migration_means_a_new_capture():
    forget_template()
    pool_spares_build(count=1)
    old_key = SchemaTemplate.objects.get().key
    with extra_migrations("storefront", {"0002_extra": add_field_migration()}):
        assert schema_template.template_key() != old_key
        assert template_current() is None
        built = pool_spares_build(count=3)
        template = SchemaTemplate.objects.get(key=schema_template.template_key())
        assert template.key != old_key
        # The old state's script stays (code still running it may build spares meanwhile).
        assert SchemaTemplate.objects.filter(key=old_key).exists()
        assert "extra_note" in template.script
        for name in built:
            assert schema_is_current(name)
            columns = schema_catalog(name, data=False)["columns"]
            assert any(r[0] == "storefront_product" and r[2] == "extra_note" for r in columns)
        migrated = pool_schema_migrate()
        assert catalog_differences(schema_catalog(migrated), schema_catalog(built[-1])) == []
    forget_template()
    assert schema_template.template_key() == old_key


# What a real project's tenant migrations may hold beyond Django's own operations: a function and
# a trigger that writes rows, an enum, a view, a grant, a comment, rows written by SQL and by Python.
RICH = '''
from django.db import migrations


def product(apps, schema_editor):
    Product = apps.get_model("storefront", "Product")
    Product.objects.using(schema_editor.connection.alias).create(name="from python", price=1)


class Migration(migrations.Migration):
    dependencies = [("storefront", "0001_initial")]
    operations = [
        migrations.RunSQL("""
            CREATE TYPE stock_state AS ENUM ('in', 'out');
            CREATE TABLE storefront_log (id serial PRIMARY KEY, note text NOT NULL, state stock_state);
            CREATE FUNCTION storefront_log_product() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN INSERT INTO storefront_log (note) VALUES ('added ' || NEW.name); RETURN NEW; END $$;
            CREATE TRIGGER product_logged AFTER INSERT ON storefront_product
                FOR EACH ROW EXECUTE FUNCTION storefront_log_product();
            CREATE VIEW storefront_cheap AS SELECT name FROM storefront_product WHERE price < 10;
            GRANT SELECT ON storefront_cheap TO PUBLIC;
            COMMENT ON VIEW storefront_cheap IS 'products under 10';
            INSERT INTO storefront_product (id, name, price, created_at)
                VALUES ('00000000-0000-0000-0000-000000000001', 'from sql', 2, '2026-01-01');
        """, "SELECT 1"),
        migrations.RunPython(product, migrations.RunPython.noop),
    ]
'''


@pytest.mark.slow
def test_functions_triggers_views_grants_and_migrated_rows_replay_the_same():
    forget_template()
    with extra_migrations("storefront", {"0002_rich": RICH}):
        captured = pool_spares_build(count=1)
        assert SchemaTemplate.objects.get().refused == "" and len(captured) == 2
        migrated, (replayed,) = pool_schema_migrate(), pool_spares_build(count=1)
        # The Python-made product has a random id and a creation time: rows differ between any
        # two migrated schemas. The rest must not, and the number of rows in each table neither.
        expected, got = schema_catalog(migrated), schema_catalog(replayed)
        assert [r[:2] for r in expected.pop("data")] == [r[:2] for r in got.pop("data")]
        assert catalog_differences(expected, got) == []
        assert [r[1] for r in got["triggers"]] == ["product_logged"]
        assert {r[0] for r in got["functions"]} == {"storefront_log_product"}
        assert "=r/" in next(r[8] for r in got["relations"] if r[0] == "storefront_cheap")
        # Each row once, as the migrations left them: the trigger fired once per product.
        notes = sorted(r[1] for r in rows(replayed, "storefront_log"))
        assert notes == ["added from python", "added from sql"]
        assert len(rows(replayed, "storefront_product")) == 2
        # And the trigger works in the replayed spare (its function finds its table by the path).
        connection.set_schema(replayed)
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO storefront_product VALUES (gen_random_uuid(), 'new', 3, now())")
        connection.set_schema_to_public()
        assert len(rows(replayed, "storefront_log")) == 3


RAW_DDL = '''
from django.db import migrations


def raw(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:  # not through the schema editor
        cursor.execute("CREATE TABLE made_by_hand (id integer)")


class Migration(migrations.Migration):
    dependencies = [("storefront", "0001_initial")]
    operations = [migrations.RunPython(raw, migrations.RunPython.noop)]
'''

NAMES_ITS_SCHEMA = '''
from django.db import migrations


def named(apps, schema_editor):
    schema = schema_editor.connection.schema_name
    schema_editor.execute(f'CREATE TABLE "{schema}".qualified (id integer)')


class Migration(migrations.Migration):
    dependencies = [("storefront", "0001_initial")]
    operations = [migrations.RunPython(named, migrations.RunPython.noop)]
'''


@pytest.mark.slow
@pytest.mark.parametrize("source, reason", [
    (RAW_DDL, "does not rebuild the schema"),
    (NAMES_ITS_SCHEMA, "names the schema it ran in"),
])
def test_migrations_that_replay_cannot_rebuild_are_refused_and_spares_migrated(source, reason):
    forget_template()
    with extra_migrations("storefront", {"0002_special": source}):
        built = pool_spares_build(count=2)
        template = SchemaTemplate.objects.get()
        assert reason in template.refused and template.script == ""
        assert template_current() is None
        assert len(built) == 2 and all(schema_is_current(name) for name in built)
        # Migrated, so they hold what the migration made by hand.
        table = "made_by_hand" if source is RAW_DDL else "qualified"
        assert all(schema_exists(name) and rows(name, table) == [] for name in built)
        # The refusal is remembered: no second capture, straight to the migrations.
        assert len(pool_spares_build(count=1)) == 1
        assert SchemaTemplate.objects.count() == 1
    assert SchemaPoolEntry.objects.filter(status="ready").count() == 3


def test_replay_can_be_turned_off():
    forget_template()
    with override_settings(TENANT_SCHEMA_POOL_REPLAY=False):
        built = pool_spares_build(count=1)
    assert len(built) == 1 and schema_is_current(built[0])
    assert not SchemaTemplate.objects.exists()


def test_a_failing_replay_leaves_nothing_behind():
    forget_template()
    pool_spares_build(count=1)
    good = template_current()
    before = spares()
    new_names = ["_pool_" + "a" * 20, "_pool_" + "b" * 20]
    broken = Template(good.key, good.script + ";\nSELECT 1/0", good.statements)
    with pytest.raises(Exception, match="division by zero"):
        replay_spares(new_names, broken)
    assert spares() == before
    assert not SchemaPoolEntry.objects.filter(schema_name__in=new_names).exists()
    # An existing name: CREATE SCHEMA fails, the batch with it, nothing else changes.
    existing = sorted(before)[0]
    with pytest.raises(Exception, match="already exists"):
        replay_spares(["_pool_" + "c" * 20, existing], good)
    assert spares() == before


@pytest.mark.parametrize("name", [
    "public", "acme_shoes", "_pool_ABCDEF0123456789abcd",
    '_pool_0123456789abcdef0123"; DROP SCHEMA public; --',
    "_pool_0123", "_pool_0123456789abcdef01234", "",
])
def test_replay_refuses_any_name_but_a_new_spare(name):
    template = Template("k", "SELECT 1", 1)
    with pytest.raises(SchemaTemplateError, match="only new spare schemas"):
        replay_sql(name, template)


@pytest.mark.parametrize("call, message", [
    (lambda: pool_spares_build(count=0), "count must be at least 1"),
    (lambda: pool_spares_build(count=1, batch=-1), "batch must be at least 1"),
    (lambda: pool_fill(size=-1), "size must be 0 or more"),
])
def test_bad_counts_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()
    assert spares() == set()


def test_fill_builds_in_batches_and_tops_up_again_after_claims():
    forget_template()
    assert pool_fill(size=7, batch=3) in (7, 8)  # the capture makes two at once
    assert SchemaPoolEntry.objects.filter(status="ready").count() >= 7
    assert pool_fill(size=7, batch=3) == 0


def test_a_spare_never_holds_a_shops_data(plans):
    """A shop with products, users and groups; then spares captured and replayed afresh: none of it."""
    forget_template()
    shop = services.tenant_provision(  # the empty pool: built on the spot (a capture)
        subdomain="victim", name="Victim", plan="growth", owner_email="o@victim.test", actor=TEST_ACTOR
    ).tenant
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO victim.storefront_product (id, name, price, created_at) "
            "VALUES (gen_random_uuid(), 'secret ledger', 9.99, now())"
        )
        cursor.execute("INSERT INTO victim.auth_group (name) VALUES ('victim staff')")
    # The capture is made again from scratch while the shop has data, then replayed.
    forget_template()
    built = pool_spares_build(count=2)
    forget_template(stored=False)
    built += pool_spares_build(count=1)
    assert len(set(built)) == 3 and shop.schema_name not in built
    data = [schema_catalog(name)["data"] for name in built]
    assert data[0] == data[1] == data[2]
    for name in built:
        assert rows(name, "storefront_product") == [] and rows(name, "auth_group") == []
        assert rows(name, "auth_user") == []
    script = SchemaTemplate.objects.get().script
    assert "secret ledger" not in script and "victim" not in script
    # The shop's schema is not a spare: never replayed into, never claimed.
    with pytest.raises(SchemaTemplateError):
        replay_sql(shop.schema_name, template_current())
    claimed = set()
    while True:
        with transaction.atomic():
            name = pool_claim()
        if name is None:
            break
        claimed.add(name)
    assert shop.schema_name not in claimed and set(built) <= claimed
    assert "victim staff" in [group[1] for group in rows("victim", "auth_group")]
