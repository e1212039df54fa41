"""Our migrate_schemas against real PostgreSQL: no-op detection, new migrations over many schemas
(recorded SQL replayed, and Django's executor), equivalence with django-tenants' stock command,
failures, the spare-schema pool, --check."""

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django_tenants.management.commands.migrate_schemas import Command as StockCommand
from django_tenants.utils import quote_schema_name

from core.models import AuditEvent
from tenants.migration_state import expected_migration_fingerprint, schema_migration_fingerprint
from tenants.models import SchemaPoolEntry, Tenant
from tenants.schema_migrations import schemas_pending
from tests.tenants.extra_migrations import add_field_migration, extra_migrations

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.empty_pool]

# A migration Django's schema editor runs without introspection: replayable.
REPLAYABLE = '''
from django.db import migrations, models
import django.db.models.deletion


class Migration(migrations.Migration):
    dependencies = [("storefront", "0001_initial")]
    operations = [
        migrations.AddField("product", "sku", models.CharField(max_length=32, default="", blank=True)),
        migrations.AddIndex("product", models.Index(fields=["sku"], name="product_sku_idx")),
        migrations.CreateModel(
            name="Tag",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False)),
                ("label", models.CharField(max_length=30, unique=True)),
                ("product", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE,
                                              to="storefront.product")),
            ],
            options={"permissions": [("feature_tag", "Can feature tags")]},
        ),
        migrations.RunSQL("COMMENT ON TABLE storefront_product IS 'what the shop sells'"),
    ]
'''

# RunPython and an AlterField (whose SQL Django derives by introspecting the schema): every
# schema must go through Django's executor.
NOT_REPLAYABLE = '''
from django.db import migrations, models


def fill(apps, schema_editor):
    Product = apps.get_model("storefront", "Product")
    Product.objects.using(schema_editor.connection.alias).filter(sku="").update(sku="unset")


class Migration(migrations.Migration):
    dependencies = [("storefront", "0002_replayable")]
    operations = [
        migrations.RunPython(fill, migrations.RunPython.noop),
        migrations.AlterField("product", "sku", models.CharField(max_length=64, default="", unique=True)),
    ]
'''


def create_schema(name: str) -> None:
    connection.set_schema_to_public()
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE SCHEMA {quote_schema_name(name)}")


def stock_migrate(name: str) -> None:
    call_command(StockCommand(), schema_name=name, executor="standard", interactive=False, verbosity=0)


def register_tenant(name: str, plans) -> Tenant:
    return Tenant.objects.create(
        subdomain=name.replace("_", "-"), schema_name=name, name=name.title(), plan=plans["growth"],
        owner_email=f"owner@{name}.test", status=Tenant.Status.ACTIVE,
    )


def fresh_tenants(names, plans, *, workers: int = 2) -> None:
    """Tenant rows and fully migrated schemas, built by our command in parallel."""
    for name in names:
        create_schema(name)
        register_tenant(name, plans)
    call_command("migrate_schemas", tenant=True, workers=workers, verbosity=0)


def run(*args, **options) -> str:
    from io import StringIO

    out = StringIO()
    call_command("migrate_schemas", *args, stdout=out, stderr=out, **options)
    return out.getvalue()


def applied(schema: str) -> list[tuple[int, str, str]]:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, app, name FROM {quote_schema_name(schema)}.django_migrations ORDER BY id"
        )
        return cursor.fetchall()


def catalog(schema: str) -> dict:
    """What a schema holds, with its own name taken out so two schemas compare equal."""
    q = quote_schema_name(schema)

    def rows(sql, params=()):
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return [
                tuple(str(v).replace(f"{q}.", "").replace(f"{schema}.", "") if isinstance(v, str) else v
                      for v in row)
                for row in cursor.fetchall()
            ]

    connection.set_schema_to_public()
    return {
        "columns": rows(
            "SELECT table_name, column_name, ordinal_position, data_type, is_nullable, column_default, "
            "character_maximum_length, numeric_precision, numeric_scale, is_identity, identity_generation "
            "FROM information_schema.columns WHERE table_schema = %s ORDER BY 1, 3", [schema]
        ),
        "constraints": rows(
            "SELECT cl.relname, co.conname, co.contype, pg_get_constraintdef(co.oid) "
            "FROM pg_constraint co JOIN pg_class cl ON cl.oid = co.conrelid "
            "JOIN pg_namespace n ON n.oid = cl.relnamespace WHERE n.nspname = %s ORDER BY 1, 2", [schema]
        ),
        "indexes": rows(
            "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = %s ORDER BY 1, 2",
            [schema],
        ),
        "sequences": rows(
            "SELECT sequence_name, data_type, start_value, increment FROM information_schema.sequences "
            "WHERE sequence_schema = %s ORDER BY 1", [schema]
        ),
        "comments": rows(
            "SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s "
            "AND obj_description(c.oid, 'pg_class') IS NOT NULL ORDER BY 1", [schema]
        ),
        "migrations": rows(f"SELECT id, app, name FROM {q}.django_migrations ORDER BY id"),
        "content_types": rows(f"SELECT id, app_label, model FROM {q}.django_content_type ORDER BY id"),
        "permissions": rows(
            f"SELECT p.id, p.codename, p.name, ct.app_label, ct.model FROM {q}.auth_permission p "
            f"JOIN {q}.django_content_type ct ON ct.id = p.content_type_id ORDER BY p.id"
        ),
    }


def assert_same_catalog(stock_schema: str, our_schema: str) -> None:
    stock, ours = catalog(stock_schema), catalog(our_schema)
    for key in stock:
        assert ours[key] == stock[key], f"{key} differ between {stock_schema} and {our_schema}"
    assert stock["migrations"] and stock["columns"] and stock["content_types"]


def test_fingerprint_matches_what_django_records_in_a_tenant_schema():
    create_schema("fp_stock")
    stock_migrate("fp_stock")
    rows = applied("fp_stock")
    # Shared apps' migrations are recorded as applied in tenant schemas too.
    assert {app for _, app, _ in rows} >= {"tenants", "admin", "storefront", "auth"}
    assert schema_migration_fingerprint("fp_stock") == expected_migration_fingerprint()


@pytest.mark.slow  # migrates schemas twice, ours and stock
def test_noop_costs_the_same_few_queries_whatever_the_number_of_schemas(plans):
    fresh_tenants(["noop_a", "noop_b"], plans)
    before = applied("noop_a")
    events = AuditEvent.objects.count()

    with CaptureQueriesContext(connection) as two:
        out = run(verbosity=1)
    assert "2 tenant/pool schema(s): 0 migrated, 2 up to date, 0 failed" in out

    fresh_tenants(["noop_c", "noop_d", "noop_e", "noop_f"], plans)
    events += 1  # building those four is a change
    with CaptureQueriesContext(connection) as six:
        out = run(verbosity=1)
    assert "6 tenant/pool schema(s): 0 migrated, 6 up to date, 0 failed" in out
    assert len(six.captured_queries) == len(two.captured_queries) <= 8
    assert applied("noop_a") == before
    assert AuditEvent.objects.count() == events  # a run that changes nothing records nothing


@pytest.mark.slow  # migrates schemas twice, ours and stock
def test_new_migration_replayed_matches_stock_django_tenants(plans):
    names = ["rep_a", "rep_b", "rep_c", "rep_d"]
    for name in names + ["rep_stock"]:
        create_schema(name)
        stock_migrate(name)
    for name in names:
        register_tenant(name, plans)
    with extra_migrations("storefront", {"0002_replayable": REPLAYABLE}):
        out = run(tenant=True, workers=2, verbosity=2)
        stock_migrate("rep_stock")

        assert "replaying the SQL recorded on its first schema" in out
        for index in range(1, 5):
            assert f"[{index}/4] rep_" in out
        assert "applied storefront.0002_replayable" in out
        assert "4 migrated, 0 up to date, 0 failed" in out
        for name in names:
            assert schema_migration_fingerprint(name) == expected_migration_fingerprint()
            # rep_a ran Django's executor (the leader); the others replayed its SQL.
            assert_same_catalog("rep_stock", name)
        assert ("storefront", "tag") in [(a, m) for _, a, m in catalog("rep_b")["content_types"]]
        assert schemas_pending(include_public=False) == []

        event = AuditEvent.objects.get(action="schemas.migrated")
        assert event.details["migrated"] == 4


@pytest.mark.slow  # migrates schemas twice, ours and stock
def test_migration_that_is_not_replayable_runs_djangos_executor_and_matches_stock(plans):
    names = ["exe_a", "exe_b", "exe_c"]
    for name in names + ["exe_stock"]:
        create_schema(name)
        stock_migrate(name)
    for name in names:
        register_tenant(name, plans)
    migrations = {"0002_replayable": REPLAYABLE, "0003_not_replayable": NOT_REPLAYABLE}
    with extra_migrations("storefront", migrations):
        out = run(tenant=True, workers=2, verbosity=2)
        stock_migrate("exe_stock")
        assert "Django's executor per schema (storefront.0003_not_replayable runs Python" in out
        assert "3 migrated" in out
        for name in names:
            assert_same_catalog("exe_stock", name)


@pytest.mark.slow  # migrates schemas twice, ours and stock
def test_fresh_schema_full_migration_matches_stock(plans):
    create_schema("full_stock")
    stock_migrate("full_stock")
    fresh_tenants(["full_ours"], plans)
    assert_same_catalog("full_stock", "full_ours")


@pytest.mark.slow  # migrates schemas twice, ours and stock
def test_schema_sql_that_depends_on_introspection_is_not_replayed(plans):
    # Dropping a unique constraint: Django asks the schema for the constraint's name. Nothing in
    # the plan says so; only the leader's queries reveal it, so the rest run the executor too.
    drop_unique = """
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("storefront", "0002_replayable")]
    operations = [migrations.AlterField("tag", "label", models.CharField(max_length=30))]
"""
    names = ["intro_a", "intro_b", "intro_c"]
    for name in names + ["intro_stock"]:
        create_schema(name)
        stock_migrate(name)
    for name in names:
        register_tenant(name, plans)
    with extra_migrations("storefront", {"0002_replayable": REPLAYABLE, "0003_drop_unique": drop_unique}):
        out = run(tenant=True, workers=1, verbosity=2)
        stock_migrate("intro_stock")
        assert "Django's executor per schema (its SQL depends on the schema" in out
        assert "3 migrated" in out
        for name in names:
            assert_same_catalog("intro_stock", name)


@pytest.mark.parametrize("bad", ["fail_a", "fail_b"], ids=["leader-fails", "replay-fails"])
def test_failing_schema_is_rolled_back_and_reported_others_migrate(plans, bad):
    names = ["fail_a", "fail_b", "fail_c", "fail_d"]
    fresh_tenants(names, plans)
    with connection.cursor() as cursor:
        # The column the migration adds is already there: ADD COLUMN fails in this schema only.
        cursor.execute(f'ALTER TABLE "{bad}".storefront_product ADD COLUMN extra_note text')
    before = catalog(bad)
    with extra_migrations("storefront", {"0002_extra": add_field_migration()}):
        with pytest.raises(CommandError) as caught:
            run(tenant=True, workers=2, verbosity=1)
        message = str(caught.value)
        assert f"1 schema(s) failed to migrate and were rolled back: {bad}." in message
        assert "3 migrated" in message
        assert catalog(bad) == before  # nothing half-done
        for name in names:
            if name != bad:
                assert applied(name)[-1][1:] == ("storefront", "0002_extra")
        event = AuditEvent.objects.get(action="schemas.migration_failed")
        assert list(event.details["failed"]) == [bad]
        assert "already exists" in event.details["failed"][bad]


def test_spare_pool_schemas_are_kept_in_step(plans):
    fresh_tenants(["pool_tenant"], plans)
    for name, status in (("_pool_ready", SchemaPoolEntry.Status.READY),
                         ("_pool_building", SchemaPoolEntry.Status.BUILDING)):
        create_schema(name)
        stock_migrate(name)
        SchemaPoolEntry.objects.create(schema_name=name, status=status)
    with extra_migrations("storefront", {"0002_extra": add_field_migration()}):
        out = run(verbosity=1)
        assert "_pool_ready: applied storefront.0002_extra" in out
        assert "2 tenant/pool schema(s): 2 migrated" in out
        assert schema_migration_fingerprint("_pool_ready") == expected_migration_fingerprint()
        # A spare still being built belongs to its builder (which migrates it itself).
        assert schema_migration_fingerprint("_pool_building") != expected_migration_fingerprint()
        assert AuditEvent.objects.filter(action="schemas.migrated").latest("id").details["migrated"] == 2


def test_check_lists_behind_schemas_and_changes_nothing(plans):
    fresh_tenants(["chk_a", "chk_b"], plans)
    assert run(check_unapplied=True).endswith("0 schema(s) behind the code's migrations.\n")
    with extra_migrations("storefront", {"0002_extra": add_field_migration()}):
        with pytest.raises(SystemExit) as caught:
            out = run(check_unapplied=True)
        assert caught.value.code == 1
        pending = {p.schema: p.migrations for p in schemas_pending()}
        assert pending == {
            "public": ["storefront.0002_extra"],
            "chk_a": ["storefront.0002_extra"],
            "chk_b": ["storefront.0002_extra"],
        }
        out = run(plan=True, tenant=True)
        assert "chk_a (tenant): storefront.0002_extra to apply" in out
        assert applied("chk_a")[-1][2] != "0002_extra"
        run(verbosity=0)
        assert run(check_unapplied=True).endswith("0 schema(s) behind the code's migrations.\n")


def test_single_schema_and_bad_arguments(plans):
    fresh_tenants(["one_a", "one_b"], plans)
    with extra_migrations("storefront", {"0002_extra": add_field_migration()}):
        out = run(schema_name="one_b", verbosity=1)
        assert "[1/1] one_b: applied storefront.0002_extra" in out
        assert schema_migration_fingerprint("one_a") != expected_migration_fingerprint()
    with pytest.raises(CommandError, match="Schema 'nope' does not exist"):
        run(schema_name="nope")
    with pytest.raises(CommandError, match="--workers must be at least 1"):
        run(workers=0)
    with pytest.raises(CommandError, match="--schema cannot be combined with --shared"):
        run(schema_name="one_a", shared=True)


def test_pool_schema_build_goes_through_our_command(plans):
    from tenants.schema_pool import pool_schema_build

    name = pool_schema_build()
    assert schema_migration_fingerprint(name) == expected_migration_fingerprint()
    assert SchemaPoolEntry.objects.get(schema_name=name).status == SchemaPoolEntry.Status.READY


def test_schema_migrated_by_someone_else_meanwhile_is_left_alone(plans):
    from tenants.schema_migrations import MigrateReport, _plan_groups, _run_groups, migration_targets

    fresh_tenants(["late_a", "late_b", "late_c"], plans)
    with extra_migrations("storefront", {"0002_extra": add_field_migration()}):
        report = MigrateReport()
        groups = _plan_groups(migration_targets(), report)
        stock_migrate("late_c")  # another run gets there between the scan and our turn
        rows = applied("late_c")
        _run_groups(groups, report, workers=1, on_result=None)
        by_schema = {r.schema: r for r in report.results}
        assert by_schema["late_c"].status == "current"
        assert by_schema["late_c"].note == "migrated meanwhile"
        assert applied("late_c") == rows
        assert {by_schema["late_a"].status, by_schema["late_b"].status} == {"migrated"}


def test_targeted_runs_are_handed_to_django_tenants(plans):
    fresh_tenants(["tgt_a"], plans)
    with extra_migrations("storefront", {"0002_extra": add_field_migration()}):
        run(schema_name="tgt_a", verbosity=0)
        assert applied("tgt_a")[-1][2] == "0002_extra"
        # Rolling back one app is django-tenants' (and Django's) job, reached through our command.
        out = run("storefront", "0001_initial", schema_name="tgt_a", verbosity=1)
        assert "Running django-tenants' own migrate_schemas" in out
        assert applied("tgt_a")[-1][1:] != ("storefront", "0002_extra")
        assert "extra_note" not in [c[1] for c in catalog("tgt_a")["columns"]]


def test_a_worker_that_dies_is_reported_not_waited_for(plans):
    killer = '''
import os

from django.db import migrations


def die_in_one_schema(apps, schema_editor):
    if schema_editor.connection.schema_name == "die_b":
        os._exit(3)  # as an out-of-memory kill would


class Migration(migrations.Migration):
    dependencies = [("storefront", "0001_initial")]
    operations = [migrations.RunPython(die_in_one_schema, migrations.RunPython.noop)]
'''
    names = ["die_a", "die_b", "die_c", "die_d"]
    fresh_tenants(names, plans)
    with extra_migrations("storefront", {"0002_killer": killer}):
        with pytest.raises(CommandError) as caught:
            run(tenant=True, workers=2, verbosity=1)
        assert "die_b" in str(caught.value)
        assert applied("die_b")[-1][2] != "0002_killer"


def test_inconsistent_history_is_reported_with_djangos_message(plans):
    fresh_tenants(["hist_ok", "hist_bad"], plans)
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM hist_bad.django_migrations WHERE app = 'contenttypes' AND name = '0001_initial'"
        )
    with pytest.raises(CommandError, match="1 schema.s. failed to migrate and were rolled back: hist_bad"):
        run(tenant=True, verbosity=1)
    from io import StringIO

    err = StringIO()
    with pytest.raises(CommandError):
        call_command("migrate_schemas", tenant=True, stdout=StringIO(), stderr=err)
    assert "InconsistentMigrationHistory: Migration auth.0001_initial is applied before its dependency " \
           "contenttypes.0001_initial" in err.getvalue()


def test_workers_never_use_a_connection_inherited_from_the_parent(plans, monkeypatch):
    # Django keeps connections per thread and per async context: a command run where an event
    # loop is running (as after Playwright's browser tests) cannot see, nor close, the thread's
    # own open connection, which forked workers would otherwise pick up and share.
    import asyncio

    fresh_tenants(["inh_a", "inh_b", "inh_c"], plans)
    connection.ensure_connection()  # the thread's own connection, open
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

    async def in_event_loop():
        try:
            return run(tenant=True, workers=2, verbosity=1)
        finally:
            connections.close_all()  # this context's own connection

    try:
        asyncio.get_running_loop()  # already so here (Playwright's tests leave one set)
        loop_running = True
    except RuntimeError:
        loop_running = False
    with extra_migrations("storefront", {"0002_extra": add_field_migration()}):
        out = run(tenant=True, workers=2, verbosity=1) if loop_running else asyncio.run(in_event_loop())
        assert "3 migrated, 0 up to date, 0 failed" in out
    with connection.cursor() as cursor:  # and the parent's connection still works
        cursor.execute("SELECT 1")


def test_a_project_post_migrate_receiver_hears_every_app_and_keeps_djangos_receivers_scoped(plans):
    # The project connects its own post_migrate receiver (staff roles). It must hear every app
    # of every migrated schema, as with migrate, without turning Django's content-type and
    # permission receivers on for every app of every schema (that cost ~10 ms a schema).
    from django.apps import apps
    from django.db.models.signals import post_migrate

    heard = []

    def receiver(sender, **kwargs):
        heard.append((connection.schema_name, sender.label))

    fresh_tenants(["rcv_a", "rcv_b", "rcv_c"], plans)
    post_migrate.connect(receiver, dispatch_uid="test.any_app")
    try:
        with extra_migrations("storefront", {"0002_extra": add_field_migration()}):
            with CaptureQueriesContext(connection) as queries:
                out = run(tenant=True, workers=1, verbosity=2)
    finally:
        post_migrate.disconnect(dispatch_uid="test.any_app")
    assert "replaying the SQL recorded on its first schema" in out
    assert "3 migrated" in out
    labels = {c.label for c in apps.get_app_configs() if c.models_module is not None}
    for schema in ("rcv_a", "rcv_b", "rcv_c"):
        assert {label for s, label in heard if s == schema} == labels
    # An AddField creates no model: no content type or permission is looked up in any schema.
    touched = [q["sql"] for q in queries.captured_queries
               if "django_content_type" in q["sql"] or "auth_permission" in q["sql"]]
    assert touched == []
