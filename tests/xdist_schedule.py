"""How xdist hands out the tests (``-n N``, the default ``--dist load``): the longest first, one
at a time, so the few long end-to-end tests run side by side on different workers from the start
and the hundreds of short ones fill in around them.

xdist's own ``load`` sends each worker a first chunk of consecutive tests (a quarter of its share)
that it can never give back: with the slow tests sorted first, one worker got nearly all of them
and the run took as long as they did one after the other. A worker also holds the next test
while it runs one (it needs to know what comes next), so a worker busy with a long test is given a
short one to hold, never another long one.

Tests of a module whose fixtures are expensive and module-scoped (a built image) go to one worker
together.
"""

from xdist.scheduler import LoadScheduling

# Seconds per test (a module's name: each of its tests), setup and call, from ``--durations=50`` of
# a whole run under ``-n 3`` on a busy 2-core machine (about 4 times a quiet one): only the order
# matters. Other tests weigh 1.
B = "tests/bench/test_benches_run.py::test_bench_completes_a_tiny_run"
WEIGHTS: dict[str, float] = {
    "tests/backups/test_pitr.py": 850,
    "tests/deployments/test_control_plane_image.py": 190,  # x3, one unit (TOGETHER)
    "tests/platform/test_role_matrix.py::test_each_role_may_do_exactly_what_the_matrix_says": 420,
    "tests/platform/test_role_matrix.py": 45,
    "tests/api/test_schemathesis.py": 220,
    "tests/api/test_domains_backups_deployments.py::test_backups_exports_and_restore_need_their_scopes": 160,
    f"{B}[bench_pitr]": 140, f"{B}[bench_backups]": 125, f"{B}[bench_api]": 125,
    f"{B}[bench_provision]": 90, f"{B}[bench_routing]": 80, f"{B}[bench_migrate]": 70,
    f"{B}[bench_offsite]": 60, f"{B}[bench_edge_push]": 50, f"{B}[bench_deploy]": 40, f"{B}[bench_pool]": 35,
    "tests/bench/test_benches_run.py": 25,
    "tests/webhooks/test_worker.py::test_the_worker_delivers_retries_and_keeps_shops_apart": 120,
    "tests/api/test_errors_and_schema.py::test_the_check_command_fails_when_the_schema_is_stale": 75,
    "tests/api/test_webhooks.py::test_a_staff_key_registers_an_endpoint_and_receives_signed_deliveries": 70,
    "tests/api/test_webhooks.py::test_keys_see_only_their_own_endpoints_and_need_the_scope": 50,
    "tests/tenants/test_migrate_schemas.py": 45,
    "tests/tenants/test_schema_template.py": 45,
    "tests/platform/test_login_security.py": 30,
    "tests/deployments/test_admin.py::test_deploy_with_plan_preview_live_log_and_rollback_from_the_admin": 60,
    "tests/backups/test_admin.py::test_restore_page_refuses_a_mistyped_confirmation_then_restores": 55,
    "tests/backups/test_admin.py::test_drill_action_from_the_admin": 30,
    "tests/browser/test_admin_screens.py": 40,
    "tests/api/test_signup_end_to_end.py": 45,
    "tests/api/test_deploy_end_to_end.py": 40,  # new; a guess (a deploy on the Docker Engine)
    "tests/domains/test_end_to_end.py": 30,
    "tests/domains/test_browser.py": 30,
    "tests/monitoring/test_dashboard_browser.py": 25,
    "tests/deployments/test_compose.py": 20,
    "tests/deployments/test_aws.py": 15,
    "tests/tenants/test_roles.py::test_check_deploy_flags_development_settings": 30,
    "tests/api/test_tenants.py::test_create_as_a_job_answers_202_with_a_status_url": 28,
    "tests/backups/test_offsite.py": 25,
}
# Modules that must stay on one worker: their module-scoped fixtures take minutes.
TOGETHER = ("tests/deployments/test_control_plane_image.py",)
# A worker running a test at least this heavy gets a light one to hold next.
HEAVY = 25.0


def weight(nodeid: str) -> float:
    module = nodeid.split("::", 1)[0]
    for key in (nodeid, nodeid.split("[", 1)[0], module):
        if key in WEIGHTS:
            return WEIGHTS[key]
    return 1.0


class WeightedScheduling(LoadScheduling):
    """``load`` with the pending tests kept heaviest first and handed out one unit at a time."""

    def _units(self) -> list[list[int]]:
        """The pending tests as units (a TOGETHER module's tests are one), heaviest first; the
        rest keep the collection's order (module-scoped fixtures are reused)."""
        assert self.collection is not None
        units: dict[str, list[int]] = {}
        for index in sorted(self.pending):
            nodeid = self.collection[index]
            module = nodeid.split("::", 1)[0]
            key = module if module in TOGETHER else nodeid
            units.setdefault(key, []).append(index)
        return sorted(units.values(), key=lambda unit: -sum(weight(self.collection[i]) for i in unit))

    def _send_unit(self, node, *, light: bool) -> None:
        units = self._units()
        if not units:
            return
        unit = units[-1] if light else units[0]
        for index in unit:
            self.pending.remove(index)
        self.node2pending[node].extend(unit)
        node.send_runtest_some(unit)

    def _running_heavy(self, node) -> bool:
        assert self.collection is not None
        pending = self.node2pending[node]
        return bool(pending) and weight(self.collection[pending[0]]) >= HEAVY

    def check_schedule(self, node, duration: float = 0) -> None:
        if node.shutting_down:
            return
        if not self.pending:
            node.shutdown()
            return
        # Two in hand: the one running and the next (xdist runs a test once it knows the next).
        while self.pending and len(self.node2pending[node]) < 2:
            self._send_unit(node, light=self._running_heavy(node))

    def schedule(self) -> None:
        assert self.collection_is_completed
        if self.collection is not None:
            for node in self.nodes:
                self.check_schedule(node)
            return
        if not self._check_nodes_have_same_collection():
            self.log("**Different tests collected, aborting run**")
            return
        self.collection = next(iter(self.node2collection.values()))
        self.pending[:] = range(len(self.collection))
        if not self.collection:
            return
        # Round by round so the heaviest go one to each worker.
        for _ in range(2):
            for node in self.nodes:
                if self.pending and len(self.node2pending[node]) < 2:
                    self._send_unit(node, light=self._running_heavy(node))
        if not self.pending:
            for node in self.nodes:
                node.shutdown()
