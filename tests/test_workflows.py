"""The pull-request workflow: it lints clean, and every command it runs exists in the repo."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from synth import PROJECT_DIR

WORKFLOWS = sorted((PROJECT_DIR / ".github" / "workflows").glob("*.yml"))
ACTIONLINT = shutil.which("actionlint") or next(
    (str(p) for p in [Path(__file__).parents[1] / ".venv" / "bin" / "actionlint"] if p.exists()), None)


def steps() -> list[tuple[str, dict]]:
    return [(job_name, step) for path in WORKFLOWS
            for job_name, job in yaml.safe_load(path.read_text())["jobs"].items() for step in job["steps"]]


def test_there_is_a_pull_request_workflow():
    assert [p.name for p in WORKFLOWS] == ["pull-request.yml"]


def test_workflows_pass_actionlint():
    if ACTIONLINT is None:
        pytest.skip("needs actionlint (requirements-dev.txt installs it on x86_64): absent")
    result = subprocess.run([ACTIONLINT, "-no-color", "-oneline", *map(str, WORKFLOWS)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_make_target_the_workflow_runs_exists():
    targets = set(re.findall(r"^([a-z][\w-]*):", (PROJECT_DIR / "Makefile").read_text(), re.MULTILINE))
    used = {target for _, step in steps() for target in re.findall(r"\bmake (?:--silent )?([a-z][\w-]*)",
                                                                    step.get("run", ""))}
    assert used and used <= targets, used - targets


def test_no_workflow_expression_is_pasted_into_a_shell_script():
    """Untrusted values (branch names, titles) reach scripts through env, never by text substitution."""
    for job, step in steps():
        assert "${{" not in step.get("run", ""), (job, step["run"])


def test_previews_run_the_policy_pack_on_every_stack_and_deploys_wait_for_approval():
    workflow = yaml.safe_load((PROJECT_DIR / ".github" / "workflows" / "pull-request.yml").read_text())
    preview = workflow["jobs"]["preview"]
    stacks = {p.name[len("Pulumi."):-len(".yaml")] for p in PROJECT_DIR.glob("Pulumi.*.yaml")}
    assert set(preview["strategy"]["matrix"]["stack"]) == stacks
    pulumi_steps = [s for _, s in steps() if s.get("uses", "").startswith("pulumi/actions@")]
    assert all(s["with"]["policyPacks"] == "policies" for s in pulumi_steps)
    assert preview["permissions"]["pull-requests"] == "write"
    assert workflow["jobs"]["deploy"]["environment"] == "${{ matrix.stack }}"
    assert (PROJECT_DIR / "policies" / "PulumiPolicy.yaml").is_file()
