"""The apps import each other in one direction only (docs/architecture.md draws it).

A new import against the direction fails here: hook in through a signal (tenants.signals), a
registry (core.facts, monitoring.metrics.metric_source) or the project package instead.
"""

import ast
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]

# What each app may import from the others. platform_site (settings, URLconfs, cron) wires them all.
MAY_IMPORT = {
    "core": set(),
    "tenants": {"core"},
    "storefront": {"core", "tenants"},
    "deployments": {"core", "tenants"},
    "monitoring": {"core", "tenants"},
    # The backups worker extends monitoring's job-timing worker.
    "backups": {"core", "tenants", "monitoring"},
    # Webhooks hear the audit trail (core.audit.audit_recorded) and read the audited objects.
    "webhooks": {"core", "tenants", "backups", "deployments"},
    # The public API sits on top: it calls every app's services; none of them imports it.
    "api": {"core", "tenants", "backups", "deployments", "monitoring", "webhooks"},
    "platform_site": {
        "core", "tenants", "storefront", "backups", "deployments", "monitoring", "webhooks", "api"
    },
}


def project_imports(path: Path) -> set[str]:
    """Top-level project packages a module imports, leaving out `if TYPE_CHECKING:` blocks."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & set(MAY_IMPORT)


def test_apps_import_each_other_in_one_direction():
    wrong = []
    for app, allowed in MAY_IMPORT.items():
        for path in sorted((BASE_DIR / app).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            for other in project_imports(path) - allowed - {app}:
                wrong.append(f"{path.relative_to(BASE_DIR)} imports {other}")
    assert not wrong, "imports against the app direction:\n" + "\n".join(wrong)


def test_the_check_sees_a_wrong_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import backups\nimport monitoring.x\n"
    )
    assert project_imports(module) == {"monitoring"}
