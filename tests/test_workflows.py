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

def test_the_job_graph_deploys_platforms_then_their_teams_and_prod_after_the_others():
    jobs = workflow("pull-request.yml")["jobs"]

    def needs(job: str) -> set[str]:
        value = jobs[job].get("needs", [])
        return {value} if isinstance(value, str) else set(value)

    # Each stage is a matrix over `make ci-stacks`' output of the same name: adding a stack needs no edit here.
    stages = {"preview": "platforms", "preview-teams": "teams", "deploy": "platforms", "deploy-teams": "teams",
              "deploy-prod": "prod-platforms", "deploy-prod-teams": "prod-teams"}
    outputs = jobs["offline"]["outputs"]
    for job, output in stages.items():
        assert jobs[job]["strategy"]["matrix"]["include"] == "${{ fromJSON(needs.offline.outputs." + output + ") }}"
        assert f"needs.offline.outputs.{output} != '[]'" in jobs[job]["if"]  # an empty matrix is an error
        assert outputs[output] == "${{ steps.stacks.outputs." + output + " }}"
    assert set(delivery.workflow_outputs([])) >= set(stages.values())
    assert needs("deploy-teams") == {"offline", "deploy"}
    assert needs("deploy-prod") == {"offline", "deploy"}  # prod only when the other platforms deployed
    assert "(needs.deploy.result == 'success' || needs.deploy.result == 'skipped')" in jobs["deploy-prod"]["if"]
    assert needs("deploy-prod-teams") == {"offline", "deploy-prod"}
    assert needs("preview-teams") == {"offline", "preview"}
    for name, job in jobs.items():
        if name.startswith("deploy"):
            assert job["uses"] == "./.github/workflows/deploy-stack.yml" and job["secrets"] == "inherit"
            assert "github.event_name == 'push' && github.ref == 'refs/heads/main'" in job["if"]
            # One deploy per stack at a time: a pending prod approval holds no other stack's deploy.
            assert job["concurrency"] == {"group": "deploy-${{ matrix.stack }}", "cancel-in-progress": False}
        if name.startswith(("deploy", "preview")):
            assert job["with"]["stack"] == "${{ matrix.stack }}" and job["with"]["cloud"] == "${{ matrix.cloud }}"
            assert job["with"]["runner"] == "${{ toJSON(matrix.runner) }}"
    assert jobs["deploy"]["with"]["verify"] is True
    # The run-wide group cancels only a pull request's older runs; runs on main never wait for each other.
    assert "github.run_id" in workflow("pull-request.yml")["concurrency"]["group"]
    for name, job in (("deploy-stack.yml", "deploy"), ("preview-stack.yml", "preview")):
        assert workflow(name)["jobs"][job]["runs-on"] == "${{ fromJSON(inputs.runner) }}"
    assert workflow("drift.yml")["jobs"]["drift"]["runs-on"] == "${{ matrix.runner }}"


def test_prod_is_previewed_only_by_code_on_main_with_the_read_role():
    preview = workflow("preview-stack.yml")["jobs"]["preview"]
    roles = " ".join(str(s.get("with", {})) for s in preview["steps"])
    assert "AWS_PREVIEW_ROLE_ARN" in roles and "AWS_READ_ROLE_ARN" not in roles and "DEPLOY" not in roles
    jobs = workflow("pull-request.yml")["jobs"]
    assert not any("prod" in str(jobs[name]["strategy"]) for name in ("preview", "preview-teams"))
    before = workflow("deploy-stack.yml")["jobs"]["preview"]
    assert "environment" not in before and "AWS_READ_ROLE_ARN" in str(before["steps"])
    assert workflow("deploy-stack.yml")["jobs"]["deploy"]["needs"] == "preview"


def test_the_deploy_refuses_placeholders_and_anything_but_the_head_of_main_before_pulumi_up():
    for job in workflow("deploy-stack.yml")["jobs"].values():
        names = [s.get("run", s.get("uses", "")) for s in job["steps"]]
        pulumi = next(i for i, s in enumerate(job["steps"]) if "command" in s.get("with", {}))
        assert names.index('make deployable STACK="$STACK"') < pulumi
        (guard,) = [i for i, n in enumerate(names) if n.startswith("make --silent head-of-main MAIN_HEAD=")]
        assert guard < pulumi and "repos/$REPOSITORY/commits/main" in names[guard]


def test_the_pulumi_cli_the_workflows_install_is_the_sdk_release_and_the_policy_packs():
    pin = re.search(r"^pulumi==(\S+)$", (PROJECT_DIR / "requirements.txt").read_text(), re.MULTILINE)
    assert pin, "requirements.txt pins the Pulumi SDK"
    assert (PROJECT_DIR / ".pulumi.version").read_text().strip() == pin.group(1)
    pulumi_steps = [s for _, s in steps() if s.get("uses", "").startswith("pulumi/actions@")]
    assert pulumi_steps and all(s["with"]["pulumi-version-file"] == ".pulumi.version" and "pulumi-version" not in
                                s["with"] for s in pulumi_steps)
    # The policy pack runs in its own virtualenv: the same SDK and policy releases as the project's.
    pins = r"^(pulumi(?:-policy)?==\S+)$"
    project = set(re.findall(pins, (PROJECT_DIR / "requirements.txt").read_text(), re.MULTILINE))
    pack = set(re.findall(pins, (PROJECT_DIR / "policies" / "requirements.txt").read_text(), re.MULTILINE))
    assert len(pack) == 2 and pack == project


def test_drift_detection_refreshes_every_stack_ci_operates_at_its_deployed_commit_and_keeps_one_issue_per_stack():
    drift = workflow("drift.yml")
    # YAML 1.1 reads the key `on` as true.
    triggers = next(value for key, value in drift.items() if key in ("on", True))
    assert set(triggers) == {"schedule", "workflow_dispatch"}
    job = drift["jobs"]["drift"]
    assert job["strategy"]["matrix"]["include"] == "${{ fromJSON(needs.stacks.outputs.all) }}"
    assert job["permissions"]["issues"] == "write"
    script = "\n".join(s.get("run", "") for s in job["steps"])
    assert "pulumi preview --refresh --expect-no-changes" in script
    # The CLI's exit code tells drift (7) from an error; the code is the deployed commit's, not main's.
    assert "7) result=drifted ;;" in script and "no changes were expected" not in script
    assert script.index('git checkout --quiet "$COMMIT"') < script.index("pulumi preview --refresh")
    assert 'title="Drift in stack $STACK"' in script
    for command in ("gh issue create", "gh issue comment", "gh issue close"):
        assert command in script
    # A public repository publishes the counts only, never the preview's ARNs and account IDs.
    publish = script.index('tail -n 200 drift.txt >> "$GITHUB_STEP_SUMMARY"')
    assert script.rindex('gh api "repos/$REPOSITORY" --jq .private', 0, publish) < publish
    assert script.index("cp drift-counts.txt drift.txt") < script.index("tail -n 300 drift.txt")


def test_credentials_outlive_what_runs_with_them_and_verify_ends_before_its_step():
    deploy = workflow("deploy-stack.yml")["jobs"]["deploy"]["steps"]
    credentials = [i for i, s in enumerate(deploy) if s.get("uses", "").startswith("aws-actions/")]
    up = next(i for i, s in enumerate(deploy) if s.get("with", {}).get("command") == "up")
    verify = next(i for i, s in enumerate(deploy) if "make verify" in s.get("run", ""))
    assert credentials[0] < up < credentials[1] < verify  # fresh credentials before verify
    assert deploy[up]["timeout-minutes"] * 60 < deploy[credentials[0]]["with"]["role-duration-seconds"]
    deadline = int(re.search(r"VERIFY_TIMEOUT=(\d+)", deploy[verify]["run"]).group(1))
    assert deadline < deploy[verify]["timeout-minutes"] * 60 < deploy[credentials[1]]["with"]["role-duration-seconds"]
    # Verify brings up a GPU node per pool: only after an update that changed something.
    assert "steps.update.outputs.changed == 'true'" in deploy[verify]["if"]
    for path in WORKFLOWS:
        for name, job in yaml.safe_load(path.read_text())["jobs"].items():
            if "steps" in job:
                assert 0 < job["timeout-minutes"] <= 140, (path.name, name)


def test_every_action_is_pinned_by_commit_with_its_version_and_dependabot_bumps_them():
    pins: dict[str, set[str]] = {}
    for path in WORKFLOWS:
        for line in path.read_text().splitlines():
            if match := re.match(r"^\s*(?:- )?uses: ([\w.-]+/[\w./-]+)@(\S+)(.*)$", line):
                action, ref, comment = match.groups()
                assert re.fullmatch(r"[0-9a-f]{40}", ref), (path.name, line)
                assert re.fullmatch(r" # v\d+\.\d+\.\d+", comment), (path.name, line)
                pins.setdefault(action, set()).add(ref + comment)
    assert pins and all(len(refs) == 1 for refs in pins.values()), pins  # one release of each action
    dependabot = yaml.safe_load((PROJECT_DIR / ".github" / "dependabot.yml").read_text())
    assert any(u["package-ecosystem"] == "github-actions" and u["directory"] == "/" for u in dependabot["updates"])


def test_checkouts_keep_no_token_for_the_code_they_run():
    for _, step in steps():
        if step.get("uses", "").startswith("actions/checkout@"):
            assert step["with"]["persist-credentials"] is False


def test_our_pull_request_comment_is_found_by_its_marker_never_the_newest_of_the_bot():
    offline = workflow("pull-request.yml")["jobs"]["offline"]
    script = "\n".join(s.get("run", "") for s in offline["steps"])
    assert "--edit-last" not in script
    assert "COMMENT=offline-comment.md" in script and "startswith(" in script and "head -n 1 offline-comment.md" in script
    # The pinned charts are pulled, and a release left unrendered fails the job.
    assert offline["env"]["MLPLATFORM_PULL_CHARTS"] == "1"
    assert 'grep "NOT RENDERED" synth.txt' in script


@pytest.mark.parametrize("name", ["deploy-stack.yml", "preview-stack.yml", "drift.yml"])
def test_gcp_stacks_get_the_auth_plugin_their_kubeconfig_runs_before_pulumi(name):
    # clouds/gke/cluster.py's kubeconfig execs gke-gcloud-auth-plugin: without it every Kubernetes resource
    # of a gcp stack fails in CI.
    jobs = [job["steps"] for job in workflow(name)["jobs"].values()
            if any(s.get("uses", "").startswith("google-github-actions/auth@") for s in job.get("steps", []))]
    assert jobs
    for steps in jobs:
        plugin = next(i for i, s in enumerate(steps) if s.get("uses", "").startswith(
            "google-github-actions/setup-gcloud@") and "gke-gcloud-auth-plugin" in s["with"]["install_components"])
        runs_pulumi = [i for i, s in enumerate(steps) if s.get("with", {}).get("command") in ("up", "preview")
                       or "pulumi preview" in s.get("run", "") or "make --silent reachable" in s.get("run", "")]
        assert runs_pulumi and plugin < min(runs_pulumi)


def test_a_preview_checks_its_deployed_cluster_answers_before_it_runs():
    """The Kubernetes provider only warns about a cluster it cannot reach: the job asks first, and fails."""
    for name in ("preview-stack.yml", "deploy-stack.yml"):
        job = workflow(name)["jobs"]["preview"]
        runs = [s.get("run", "") for s in job["steps"]]
        reach = next(i for i, run in enumerate(runs) if run.startswith('make --silent reachable STACK="$STACK"'))
        preview = next(i for i, s in enumerate(job["steps"]) if s.get("with", {}).get("command") == "preview")
        assert reach < preview
    team = workflow("preview-stack.yml")["jobs"]["preview"]["steps"]
    preview = next(s for s in team if s.get("with", {}).get("command") == "preview")
    assert preview["if"] == "inputs.platform == '' || steps.reach.outputs.deployed == 'true'"


def test_ci_fails_on_every_test_skipped_for_a_chart():
    """The offline job's pattern matches each skip reason that comes from a chart not found or not rendered."""
    offline = workflow("pull-request.yml")["jobs"]["offline"]
    script = "\n".join(s.get("run", "") for s in offline["steps"])
    pattern = re.search(r'grep -E "\^SKIPPED \.\*(\(.*?\))" tests\.txt', script).group(1)
    reasons = [reason for path in (PROJECT_DIR / "tests").glob("test_*.py")
               for reason in re.findall(r'pytest\.skip\(f"([^"]*)"', path.read_text())
               if "chart_dirs()" in reason or "unavailable" in reason]
    assert reasons and all(re.search(pattern, reason) for reason in reasons), reasons
