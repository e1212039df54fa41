"""Every setting read from the environment is documented in .env.example, and nothing more."""

import ast
import re
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]

# Read by a library straight from the environment, not through settings.py (still documented).
LIBRARY_ENV = {"PROMETHEUS_MULTIPROC_DIR"}
KINDS = ("bool", "int", "float", "list", "dict", "path", "db", "str")
ENV_READERS = {"env", *(f"env.{kind}" for kind in KINDS)}


def settings_read() -> list[str]:
    """Variable names platform_site/settings.py reads, in the order it reads them."""
    tree = ast.parse((BASE_DIR / "platform_site" / "settings.py").read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func) in ENV_READERS and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                names.append((node.lineno, node.col_offset, first.value))
    return [name for _, _, name in sorted(names)]


def documented() -> list[str]:
    text = (BASE_DIR / ".env.example").read_text()
    return re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", text, flags=re.M)


def test_every_setting_read_is_in_env_example():
    missing = [name for name in settings_read() if name not in documented()]
    assert not missing, f"add these to .env.example, with a comment: {missing}"


def test_env_example_names_only_settings_that_are_read():
    stale = [name for name in documented() if name not in settings_read() and name not in LIBRARY_ENV]
    assert not stale, f"remove these from .env.example (no setting reads them): {stale}"


def banners(lines: list[str], pattern: str) -> dict[str, str]:
    """Each variable named in `lines`, with the banner (section title) it stands under."""
    found, banner = {}, ""
    for line in lines:
        if title := re.match(pattern, line):
            banner = title.group(1)
        for name in re.findall(r'env(?:\.\w+)?\("([A-Z][A-Z0-9_]+)"', line) or re.findall(
            r"^#? ?([A-Z][A-Z0-9_]+)=", line
        ):
            found.setdefault(name, banner)
    return found


def test_env_example_has_the_same_sections_as_settings():
    banner = r"^# === (.+) ===$"
    in_settings = banners((BASE_DIR / "platform_site" / "settings.py").read_text().splitlines(), banner)
    in_example = banners((BASE_DIR / ".env.example").read_text().splitlines(), banner)
    misplaced = {n: (in_example[n], b) for n, b in in_settings.items() if in_example.get(n, b) != b}
    assert not misplaced, f"in .env.example, under the wrong section (found, expected): {misplaced}"
