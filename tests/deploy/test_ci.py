"""The GitHub Actions workflow runs exactly what .ci/run runs, and is valid by the workflow schema
that check-jsonschema ships (pinned)."""

from __future__ import annotations

import subprocess

import yaml

from tests.support.deploy import BIN
from tests.support.paths import REPO

WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"


def test_the_workflow_meets_github_s_schema() -> None:
    # check-jsonschema reads YAML 1.2, as GitHub does: `on:` stays a key (YAML 1.1 makes it True).
    done = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_workflow_runs_the_same_dev_test_as_ci() -> None:
    assert "./dev test -q" in (REPO / ".ci" / "run").read_text()
    (job,) = yaml.safe_load(WORKFLOW.read_text())["jobs"].values()
    runs = [step["run"] for step in job["steps"] if "run" in step]
    assert len(runs) == 1 and runs[0].endswith("bash .ci/run"), runs
    assert job["timeout-minutes"] <= 60
