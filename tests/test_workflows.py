"""The pull-request workflow: it lints clean, and every command it runs exists in the repo."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from synth import PROJECT_DIR, delivery

WORKFLOWS = sorted((PROJECT_DIR / ".github" / "workflows").glob("*.yml"))
ACTIONLINT = shutil.which("actionlint") or next(
    (str(p) for p in [Path(__file__).parents[1] / ".venv" / "bin" / "actionlint"] if p.exists()), None)


def steps() -> list[tuple[str, dict[str, Any]]]:
    # Jobs that call a reusable workflow have no steps of their own: theirs are in that workflow.
    return [(job_name, step) for path in WORKFLOWS
            for job_name, job in yaml.safe_load(path.read_text())["jobs"].items() for step in job.get("steps", [])]


def workflow(name: str) -> dict[str, Any]:
    return yaml.safe_load((PROJECT_DIR / ".github" / "workflows" / name).read_text())


def test_the_workflows_are_pull_requests_their_two_reusable_stages_and_drift():
    assert [p.name for p in WORKFLOWS] == ["deploy-stack.yml", "drift.yml", "preview-stack.yml", "pull-request.yml"]


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


def test_previews_and_deploys_run_the_policy_pack_and_deploys_wait_for_approval():
    pulumi_steps = [s for _, s in steps() if s.get("uses", "").startswith("pulumi/actions@") and "command" in
                    s.get("with", {})]
    assert {s["with"]["command"] for s in pulumi_steps} == {"preview", "up"}
    # CI never creates a stack: one it created would get a new data key or salt on every run.
    assert not any(s["with"].get("upsert") for s in pulumi_steps)
    assert all(s["with"]["policyPacks"] == "policies" for s in pulumi_steps)
    assert workflow("deploy-stack.yml")["jobs"]["deploy"]["environment"] == "${{ inputs.stack }}"
    assert workflow("preview-stack.yml")["jobs"]["preview"]["permissions"]["pull-requests"] == "write"
    assert (PROJECT_DIR / "policies" / "PulumiPolicy.yaml").is_file()


# ---- delivery: order, runners, placeholders, the CLI pin ------------------------------------------------

def test_the_job_graph_deploys_dev_then_prod_gcp_dev_alone_and_team_stacks_after_their_platform():
    jobs = workflow("pull-request.yml")["jobs"]

    def needs(job: str) -> set[str]:
        value = jobs[job].get("needs", [])
        return {value} if isinstance(value, str) else set(value)

    assert needs("deploy-dev") == {"offline"}
    assert needs("deploy-prod") == {"offline", "deploy-dev"}  # prod only when dev succeeded
    assert needs("deploy-gcp-dev") == {"offline"}  # its own track
    assert needs("preview-teams") == {"offline", "preview"}
    for stack in delivery.ci_stacks():
        if not stack.platform:
            job = jobs[f"deploy-{stack.stack}"]
            assert job["with"]["stack"] == stack.stack and job["with"]["cloud"] == stack.cloud
            continue
        job = jobs[f"deploy-teams-{stack.platform}"]
        assert f"deploy-{stack.platform}" in needs(f"deploy-teams-{stack.platform}")
        assert stack.stack in job["strategy"]["matrix"]["stack"]
    for name, job in jobs.items():
        if name.startswith("deploy-"):
            assert job["uses"] == "./.github/workflows/deploy-stack.yml" and job["secrets"] == "inherit"
    assert jobs["deploy-dev"]["with"]["verify"] is True
    deploy = workflow("deploy-stack.yml")["jobs"]["deploy"]
    assert [s["run"] for s in deploy["steps"] if "verify" in s.get("run", "")] == ['make verify STACK="$STACK"']


def test_every_stack_runs_on_the_runner_its_stack_file_names():
    outputs = dict(line.split("=", 1) for line in subprocess.run(
        [sys.executable, "-m", "synth.delivery", "stacks"], cwd=PROJECT_DIR, capture_output=True, text=True,
        check=True).stdout.splitlines())
    runners = json.loads(outputs["runners"])
    assert runners == {s.stack: s.runner for s in delivery.ci_stacks()}
    assert runners["prod"] == ["self-hosted", "linux", "x64", "ml-prod"]  # its API is private to the VPC
    assert runners["gcp-dev"] == ["ubuntu-24.04"]  # the DNS endpoint admits hosted runners
    assert {s["stack"] for s in json.loads(outputs["all"])} == set(runners)
    jobs = workflow("pull-request.yml")["jobs"]
    for stack, key in (("dev", ".dev"), ("prod", ".prod"), ("gcp-dev", "['gcp-dev']")):
        assert jobs[f"deploy-{stack}"]["with"]["runner"] == \
            "${{ toJSON(fromJSON(needs.offline.outputs.runners)" + key + ") }}"
    assert jobs["deploy-teams-dev"]["with"]["runner"] == \
        "${{ toJSON(fromJSON(needs.offline.outputs.runners)[matrix.stack]) }}"
    for name in ("preview", "preview-teams"):
        assert jobs[name]["with"]["runner"] == "${{ toJSON(matrix.runner) }}"
    for name, job in (("deploy-stack.yml", "deploy"), ("preview-stack.yml", "preview")):
        assert workflow(name)["jobs"][job]["runs-on"] == "${{ fromJSON(inputs.runner) }}"
    assert workflow("drift.yml")["jobs"]["drift"]["runs-on"] == "${{ matrix.runner }}"


def test_the_deploy_refuses_placeholders_before_pulumi_up():
    names = [s.get("run", s.get("uses", "")) for s in workflow("deploy-stack.yml")["jobs"]["deploy"]["steps"]]
    refusal = names.index('make deployable STACK="$STACK"')
    assert refusal < next(i for i, n in enumerate(names) if n.startswith("pulumi/actions@"))


def test_the_pulumi_cli_the_workflows_install_is_the_sdk_release():
    pin = re.search(r"^pulumi==(\S+)$", (PROJECT_DIR / "requirements.txt").read_text(), re.MULTILINE)
    assert pin, "requirements.txt pins the Pulumi SDK"
    sdk = pin.group(1)
    versions = [s["with"].get("pulumi-version") for _, s in steps() if s.get("uses", "").startswith("pulumi/actions@")]
    assert versions and all(v == sdk for v in versions), (sdk, versions)


def test_drift_detection_refreshes_every_stack_ci_deploys_and_keeps_one_issue_per_stack():
    drift = workflow("drift.yml")
    # YAML 1.1 reads the key `on` as true.
    triggers = next(value for key, value in drift.items() if key in ("on", True))
    assert set(triggers) == {"schedule", "workflow_dispatch"}
    job = drift["jobs"]["drift"]
    assert job["strategy"]["matrix"]["include"] == "${{ fromJSON(needs.stacks.outputs.all) }}"
    assert job["permissions"]["issues"] == "write"
    script = "\n".join(s.get("run", "") for s in job["steps"])
    assert "pulumi preview --refresh --expect-no-changes" in script
    assert 'title="Drift in stack $STACK"' in script
    for command in ("gh issue create", "gh issue comment", "gh issue close"):
        assert command in script


@pytest.mark.parametrize("name", ["deploy-stack.yml", "preview-stack.yml", "drift.yml"])
def test_gcp_stacks_get_the_auth_plugin_their_kubeconfig_runs_before_pulumi(name):
    # clouds/gke/cluster.py's kubeconfig execs gke-gcloud-auth-plugin: without it every Kubernetes resource
    # of a gcp stack fails in CI.
    (steps,) = [job["steps"] for job in workflow(name)["jobs"].values()
                if any(s.get("uses", "").startswith("google-github-actions/auth@") for s in job.get("steps", []))]
    plugin = next(i for i, s in enumerate(steps) if s.get("uses", "").startswith(
        "google-github-actions/setup-gcloud@") and "gke-gcloud-auth-plugin" in s["with"]["install_components"])
    runs_pulumi = [i for i, s in enumerate(steps) if s.get("with", {}).get("command") in ("up", "preview")
                   or "pulumi preview" in s.get("run", "")]
    assert runs_pulumi and plugin < min(runs_pulumi)
