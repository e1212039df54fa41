"""How xdist hands out the tests (``-n N``, the default ``--dist load``): the longest first, one
at a time, so the few long end-to-end tests run side by side on different workers from the start
and the hundreds of short ones fill in around them.

xdist's own ``load`` sends each worker a first chunk of consecutive tests (a quarter of its share)
that it can never give back: with the slow tests sorted first, one worker got nearly all of them
and the run took as long as they did one after the other. A worker also holds the next test
while it runs one (it needs to know what comes next), so a worker busy with a long test is given a
short one to hold, never another long one.

Tests of a module whose fixtures are expensive and module-scoped (a built image, a cluster) go to
one worker together. The weights are seconds measured on the whole suite (``--durations``); a test
not listed weighs 1.
"""

from xdist.scheduler import LoadScheduling

# Seconds per test (or per module: every test in it), measured under ``-n 3``.
WEIGHTS: dict[str, float] = {
    "tests/backups/test_pitr.py": 240,
    "tests/deployments/test_control_plane_image.py": 50,
    "tests/api/test_schemathesis.py": 80,
    "tests/deployments/test_compose.py": 12,
    "tests/deployments/test_aws.py": 6,
    "tests/bench/test_benches_run.py": 10,
    "tests/api/test_domains_backups_deployments.py::test_backups_exports_and_restore_need_their_scopes": 40,
    "tests/api/test_webhooks.py::test_a_staff_key_registers_an_endpoint_and_receives_signed_deliveries": 25,
    "tests/api/test_signup_end_to_end.py": 30,
    "tests/domains/test_end_to_end.py": 30,
    "tests/browser/test_admin_screens.py": 15,
}
# Modules that must stay on one worker: their module-scoped fixtures take minutes.
TOGETHER = ("tests/deployments/test_control_plane_image.py",)
# A worker running a test at least this heavy gets a light one to hold next.
HEAVY = 10.0


def weight(nodeid: str) -> float:
    module = nodeid.split("::", 1)[0]
    for key in (nodeid.split("[", 1)[0], module):
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
