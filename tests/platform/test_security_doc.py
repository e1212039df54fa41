"""docs/security.md's Roles section is what `manage.py security_doc` writes from the matrix."""

import pytest
from django.core.management import CommandError, call_command

from core import access
from core.security_doc import END, START, security_doc_path, security_doc_render


def test_the_committed_roles_section_is_current():
    current = security_doc_path().read_text()
    assert security_doc_render(current) == current, "run `manage.py security_doc` and commit the result"
    for heading in ("## Roles", "## Hosts and what each exposes", "## Outbound fetches",
                    "## Backups and exports", "## Login, 2FA and throttling", "## Reporting a vulnerability"):
        assert f"\n{heading}\n" in current


def test_the_section_follows_the_matrix_and_keeps_the_rest(tmp_path, monkeypatch, capsys):
    doc = tmp_path / "security.md"
    doc.write_text(f"# Security\n\nKept above.\n\n{START}\nstale\n{END}\n\nKept below.\n")
    with pytest.raises(CommandError, match="out of date: run `manage.py security_doc`"):
        call_command("security_doc", "--check", path=doc)
    call_command("security_doc", path=doc)
    text = doc.read_text()
    assert text.startswith("# Security\n\nKept above.\n\n") and text.endswith(f"{END}\n\nKept below.\n")
    assert "stale" not in text
    assert ("| Deploy a release (plan preview, then deploy) | `deployments.deploy_release` "
            "| operators, superusers |") in text
    assert "| Users (`auth.user`) | superusers | superusers | superusers | superusers |" in text
    # A changed matrix changes the document.
    entry = access.Entry("deployments.view_release", "Deploy a release (plan preview, then deploy)")
    monkeypatch.setitem(access.VIEWS, "admin:deployments_release_deploy", entry)
    with pytest.raises(CommandError, match="out of date"):
        call_command("security_doc", "--check", path=doc)


def test_a_file_without_markers_is_refused_with_what_to_add(tmp_path):
    doc = tmp_path / "security.md"
    doc.write_text("# Security\n")
    with pytest.raises(CommandError, match="needs the markers <!-- roles:start --> and <!-- roles:end -->"):
        call_command("security_doc", path=doc)
