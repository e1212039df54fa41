"""Point-in-time recovery end to end, on real components: a PostgreSQL cluster this module starts
(archive_mode on, archive_command = pgBackRest's archive-push), pgBackRest archiving into two S3
buckets on moto's server over TLS (nginx in front, its certificate verified), and the control
plane run against that cluster as its own database (its management commands, as an operator
runs them). One cluster, for one test (about a minute to set up on a quiet machine: migrate,
demo shops, stanza, a full backup); each restore goes into a scratch cluster the control plane
starts (three: in place, as a new shop, the whole database).
"""

import json
import threading
import time
from datetime import timedelta

import psycopg
import pytest
from psycopg import sql

from tests.backups.pitr_components import ArchivingCluster, start_archiving_cluster

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(moto_port):
    started = start_archiving_cluster(moto_port)
    yield started
    started.stop()


def add_products(cluster: ArchivingCluster, schema: str, names: list[str]) -> None:
    with cluster.connect() as conn:
        for name in names:
            conn.execute(
                sql.SQL(
                    "INSERT INTO {}.storefront_product (id, name, price, created_at) "
                    "VALUES (gen_random_uuid(), %s, 9.99, now())"
                ).format(sql.Identifier(schema)),
                [name],
            )


def product_names(cluster: ArchivingCluster, schema: str, dbname: str = "platform") -> list[str]:
    with cluster.connect(dbname) as conn:
        rows = conn.execute(
            sql.SQL("SELECT name FROM {}.storefront_product ORDER BY name").format(sql.Identifier(schema))
        ).fetchall()
    return [r[0] for r in rows]


def moment(cluster: ArchivingCluster):
    """The server's clock between two writes: what the restore is asked for."""
    with cluster.connect() as conn:
        noted = conn.execute("SELECT clock_timestamp()").fetchone()[0]
    time.sleep(0.05)
    return noted


def live_state(cluster: ArchivingCluster) -> dict:
    with cluster.connect() as conn:
        return {
            "schemas": sorted(r[0] for r in conn.execute("SELECT nspname FROM pg_namespace").fetchall()),
            "databases": sorted(r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()),
            "tenants": conn.execute("SELECT subdomain, status FROM tenants_tenant ORDER BY 1").fetchall(),
            "restores": conn.execute("SELECT count(*) FROM backups_restore").fetchone()[0],
            "acme": product_names(cluster, "acme_shoes"),
        }


def scratch_left(cluster: ArchivingCluster) -> list[str]:
    folder = cluster.folder / "scratch"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def check_one_shop_restored_in_place_while_the_others_keep_serving(cluster: ArchivingCluster) -> None:
    add_products(cluster, "acme_shoes", ["good-1", "good-2"])
    expected = product_names(cluster, "acme_shoes")
    noted = moment(cluster)
    # The bad import: everything replaced.
    with cluster.connect() as conn:
        conn.execute("DELETE FROM acme_shoes.storefront_product")
    add_products(cluster, "acme_shoes", [f"bad-{i}" for i in range(50)])
    add_products(cluster, "initech", ["initech-after"])  # another shop's later write must survive

    reads, errors, stop = [0], [], threading.Event()

    def read_other_shop() -> None:
        with cluster.connect(autocommit=True) as conn:
            while not stop.is_set():
                try:
                    conn.execute("SELECT count(*) FROM initech.storefront_product").fetchone()
                    reads[0] += 1
                except psycopg.Error as exc:  # pragma: no cover - reported below
                    errors.append(str(exc))
                time.sleep(0.01)

    reader = threading.Thread(target=read_other_shop)
    reader.start()
    try:
        done = cluster.manage(
            "restore_tenant", "acme-shoes", "--to-time", noted.isoformat(), "--confirm", "acme-shoes"
        )
    finally:
        stop.set()
        reader.join(timeout=10)

    assert "safety backup" in done.stdout
    assert product_names(cluster, "acme_shoes") == expected
    assert "initech-after" in product_names(cluster, "initech")
    assert errors == [] and reads[0] > 0
    with cluster.connect() as conn:
        row = conn.execute(
            "SELECT status, to_time, safety_backup_id FROM backups_restore ORDER BY started_at DESC"
        ).fetchone()
    assert row[0] == "succeeded" and row[1] == noted and row[2] is not None
    assert scratch_left(cluster) == []


def check_one_shop_restored_as_a_new_shop(cluster: ArchivingCluster) -> None:
    expected = product_names(cluster, "globex")
    noted = moment(cluster)
    add_products(cluster, "globex", ["globex-after"])

    cluster.manage("restore_tenant", "globex", "--to-time", noted.isoformat(), "--as-new", "globex-then")

    assert product_names(cluster, "globex_then") == expected
    assert "globex-after" in product_names(cluster, "globex")
    with cluster.connect() as conn:
        status = conn.execute("SELECT status FROM tenants_tenant WHERE subdomain = 'globex-then'").fetchone()
    assert status == ("active",)


REFUSALS = """
import json
from django.core.management import call_command
from django.core.management.base import CommandError
out = []
for args in json.loads(CASES):
    try:
        call_command(*args)
        out.append("no refusal")
    except CommandError as exc:
        out.append(str(exc))
print("REFUSALS" + json.dumps(out))
"""


def check_bad_inputs_are_refused_and_change_nothing(cluster: ArchivingCluster) -> None:
    noted = moment(cluster)
    before = live_state(cluster)
    future = (noted + timedelta(hours=1)).isoformat()
    cases = [
        (("restore_tenant", "acme-shoes", "--to-time", future, "--confirm", "acme-shoes"), "in the future"),
        (
            (
                "restore_tenant",
                "acme-shoes",
                "--to-time",
                "2001-01-01 00:00:00+00",
                "--confirm",
                "acme-shoes",
            ),
            "before the oldest backup",
        ),
        (
            ("restore_tenant", "no-such-shop", "--to-time", noted.isoformat(), "--confirm", "no-such-shop"),
            "no-such-shop",
        ),
        (
            ("restore_tenant", "acme-shoes", "--to-time", "around noon", "--confirm", "acme-shoes"),
            "is not a moment",
        ),
        (
            ("restore_tenant", "acme-shoes", "--to-time", noted.isoformat(), "--confirm", "acme"),
            "does not match",
        ),
        (("restore_tenant", "acme-shoes", "--to-time", noted.isoformat(), "--as-new", "initech"), "is taken"),
        (
            ("restore_database", "--to-time", noted.isoformat(), "--target-database", "platform"),
            "live database",
        ),
        (("restore_database", "--to-time", future, "--target-database", "platform_future"), "in the future"),
        (
            ("restore_database", "--to-backup", "20000101-000000F", "--target-database", "platform_x"),
            "No succeeded pgBackRest backup",
        ),
    ]
    # Two as an operator runs them (exit status 1, one line on stderr); all of them in one process.
    for args, message in cases[:2]:
        result = cluster.manage(*args, check=False, timeout=120)
        assert result.returncode == 1 and message in result.stderr, (args, result.stdout, result.stderr)
    env_cases = json.dumps([list(args) for args, _ in cases])
    done = cluster.manage("shell", "-c", f"CASES = {env_cases!r}\n" + REFUSALS, timeout=300)
    answers = json.loads(done.stdout.split("REFUSALS", 1)[1])
    for (args, message), answer in zip(cases, answers, strict=True):
        assert message in answer, (args, answer)
    assert live_state(cluster) == before
    assert scratch_left(cluster) == []


def check_archive_age_is_the_data_at_risk(cluster: ArchivingCluster) -> None:
    """pitr_status (and /metrics) report how old the newest archived WAL is while newer WAL waits:
    0 once everything is archived, growing from the first write after that."""
    with cluster.connect(autocommit=True) as conn:
        conn.execute("SELECT pg_switch_wal()")
    deadline = time.monotonic() + 60
    while True:
        state = json.loads(cluster.manage("pitr_status", "--json", "--no-refresh").stdout)
        if state["archive_age_seconds"] == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert state["archive_age_seconds"] == 0, state
    add_products(cluster, "initech", [f"risk-{i}" for i in range(200)])
    # Read well within archive_timeout (30 s here), before the server switches segments by itself.
    waiting = json.loads(cluster.manage("pitr_status", "--json", "--no-refresh").stdout)
    assert waiting["archive_age_seconds"] > 0
    # WAL goes to both repositories; only repo1 has a backup yet (repo2 says so). A segment may
    # be read between its push to one repository and to the other: ask again, briefly.
    deadline = time.monotonic() + 30
    while True:
        after_write = json.loads(cluster.manage("pitr_status", "--json").stdout)
        repos = {r["repo"]: r for r in after_write["repositories"]}
        if set(repos) != {1, 2} or repos[1]["wal_max"] == repos[2]["wal_max"] or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert after_write["failing"] is False
    assert set(repos) == {1, 2} and repos[1]["status"] == "ok", repos
    assert repos[1]["wal_max"] == repos[2]["wal_max"] != "", repos
    assert after_write["window_start"] <= after_write["window_end"]


def check_whole_database_restored_to_a_moment_from_the_second_region_alone(cluster: ArchivingCluster) -> None:
    """restore_database to a moment, from repo2 (another bucket, another region) on its own once
    repo1 is gone. One restore for both (each costs a scratch cluster): the shop restores above
    read repo1 while it has its backup."""
    cluster.manage("pitr_backup", "--type", "full", "--repo", "2")
    add_products(cluster, "acme_shoes", ["db-before-1", "db-before-2"])
    add_products(cluster, "initech", ["region-before"])
    expected = product_names(cluster, "acme_shoes")
    expected_initech = product_names(cluster, "initech")
    noted = moment(cluster)
    add_products(cluster, "acme_shoes", ["db-after-1"])
    add_products(cluster, "initech", ["region-after"])
    with cluster.connect() as conn:
        conn.execute("UPDATE tenants_tenant SET name = 'Renamed after' WHERE subdomain = 'globex'")
    with cluster.connect(autocommit=True) as conn:  # everything up to the moment in both repositories
        switched = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
        deadline = time.monotonic() + 60
        while (
            conn.execute("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver").fetchone()[0][:24]
            < switched
            and time.monotonic() < deadline
        ):
            time.sleep(0.2)
    s3 = cluster.s3()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=cluster.buckets[0]):
        for item in page.get("Contents", []):
            s3.delete_object(Bucket=cluster.buckets[0], Key=item["Key"])

    done = cluster.manage(
        "restore_database", "--to-time", noted.isoformat(), "--target-database", "platform_at_t"
    )

    assert "matching the scratch cluster" in done.stdout, done.stdout
    assert product_names(cluster, "acme_shoes", "platform_at_t") == expected
    assert product_names(cluster, "initech", "platform_at_t") == expected_initech
    with cluster.connect("platform_at_t") as conn:
        assert conn.execute("SELECT name FROM tenants_tenant WHERE subdomain = 'globex'").fetchone()[0] != (
            "Renamed after"
        )
    # The live database is as it was, the scratch cluster is gone, the restore is audited.
    assert "db-after-1" in product_names(cluster, "acme_shoes")
    assert scratch_left(cluster) == []
    with cluster.connect() as conn:
        event = conn.execute(
            "SELECT details FROM tenants_auditevent WHERE action = 'database.pitr_restored' ORDER BY id DESC"
        ).fetchone()
    assert event and event[0]["target"] == "platform_at_t" and event[0]["rows"] > 0


def test_point_in_time_recovery_end_to_end(cluster):
    """One archiving cluster for every scenario, in one test: under xdist, tests of one module may
    run on different workers, and each would pay for its own cluster (a minute or more)."""
    check_one_shop_restored_in_place_while_the_others_keep_serving(cluster)
    check_one_shop_restored_as_a_new_shop(cluster)
    check_bad_inputs_are_refused_and_change_nothing(cluster)
    check_archive_age_is_the_data_at_risk(cluster)
    check_whole_database_restored_to_a_moment_from_the_second_region_alone(cluster)  # last: it empties repo1
