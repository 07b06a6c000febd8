"""`make diff`: an offline preview of a change, with URN changes flagged as the replacements they are."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from synth import PROJECT_DIR
from synth.diff import changed_paths, plan_diff
from synth.output import plan
from tests.conftest import KIND, project_copy, synth_with, team


def test_a_quota_change_is_an_update_of_that_input():
    before = plan(synth_with(cluster=KIND, teams=[team("research", gpus=1)]))
    after = plan(synth_with(cluster=KIND, teams=[team("research", gpus=0)]))
    diff = plan_diff("test", before, after)
    # The guarantee, in GPU units and in the pool; the GPU it no longer holds goes to the root Cohort.
    assert [(r["name"], paths) for r, paths in diff.updated] == [
        ("queues-research", ["spec.resourceGroups[0].flavors[0].resources[2].lendingLimit",
                             "spec.resourceGroups[0].flavors[0].resources[2].nominalQuota",
                             "spec.resourceGroups[1].flavors[0].resources[0].lendingLimit",
                             "spec.resourceGroups[1].flavors[0].resources[0].nominalQuota"]),
        ("queues-cohort-mlplatform", ["spec.resourceGroups"]),
        ("team-research-quota", ["spec.hard.requests.nvidia.com/gpu"])]
    assert not (diff.created or diff.replaced or diff.deleted)
    expected = "~  update   kubernetes:core/v1:ResourceQuota  team-research-quota: spec.hard.requests.nvidia.com/gpu"
    assert expected in diff.render()


def test_a_renamed_team_is_flagged_as_a_replacement_with_the_alias_that_would_keep_it():
    before = plan(synth_with(cluster=KIND, teams=[team("research")]))
    after = plan(synth_with(cluster=KIND, teams=[team("science")]))
    diff = plan_diff("test", before, after)
    assert not diff.created and not diff.deleted
    renamed = {(old["name"], new["name"]) for old, new in diff.replaced}
    assert ("team-research-quota", "team-science-quota") in renamed
    assert ("team-research", "team-science") in renamed
    assert ("queues-research", "queues-science") in renamed
    assert 'REPLACE  kubernetes:core/v1:Namespace  team-research-namespace -> team-science-namespace' in diff.render()
    assert 'aliases=[pulumi.Alias(urn="urn:pulumi:test::mlplatform::' in diff.render()


def test_added_and_removed_teams():
    before = plan(synth_with(cluster=KIND, teams=[team("a")]))
    after = plan(synth_with(cluster=KIND, teams=[team("a"), team("b")]))
    assert len(plan_diff("test", before, after).created) == len(plan_diff("test", after, before).deleted) > 0
    assert plan_diff("test", before, before).render() == "Stack test: no changes"


def test_changed_paths_reach_into_lists_and_new_keys():
    assert changed_paths({"a": [1, {"b": 2}], "c": 1}, {"a": [1, {"b": 3}], "d": 1}) == ["a[1].b", "c", "d"]


def _clone(clone: Path) -> list[str]:
    """A copy of the project's files in a git repo of its own, committed; the git command to commit with."""
    project_copy(clone)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run(["git", "init", "--quiet"], cwd=clone, check=True)
    subprocess.run(["git", "add", "-A"], cwd=clone, check=True)
    subprocess.run([*git, "commit", "--quiet", "-m", "base"], cwd=clone, check=True)
    return git


def test_make_diff_on_two_real_revisions(tmp_path: Path):
    """A copy of the project in a repo of its own gets a commit that changes a quota; diffing it against its
    parent shows the update."""
    clone = tmp_path / "repo"
    git = _clone(clone)
    stack_file = clone / "Pulumi.local.yaml"
    stack_file.write_text(stack_file.read_text().replace("storage: 100Gi", "storage: 200Gi", 1))
    subprocess.run([*git, "commit", "--quiet", "-am", "more storage for research"], cwd=clone, check=True)
    result = subprocess.run([sys.executable, "-m", "synth.diff", "--base", "HEAD~1", "local"], cwd=clone,
                            capture_output=True, text=True, check=True)
    assert "Stack local: 0 to create, 1 to update, 0 to replace, 0 to delete" in result.stdout
    assert "team-research-quota: spec.hard.requests.storage" in result.stdout


def test_rendered_objects_that_change_are_shown_with_their_paths(tmp_path: Path):
    import copy

    import pytest

    from synth import render
    from synth.diff import rendered_diff, rendered_objects_in
    from synth.output import write_rendering

    if not render.charts_available():
        pytest.skip(f"needs the charts in one of {render.chart_dirs()} (../shared/upstream/charts): absent")
    rendering = render.stack_rendering("local")
    if "kueue" in rendering.unavailable:
        pytest.skip(f"chart of release kueue unavailable: {rendering.unavailable['kueue']}")
    write_rendering(rendering, tmp_path / "before")
    bumped = copy.deepcopy(rendering)
    objects = bumped.releases["kueue"].objects
    deployment = next(obj for obj in objects if obj["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.k8s.io/kueue/kueue:v0.20.0"
    objects.remove(next(obj for obj in objects if obj["kind"] == "ClusterRole"))
    write_rendering(bumped, tmp_path / "after")
    lines = rendered_diff(rendered_objects_in(tmp_path / "before"), rendered_objects_in(tmp_path / "after"))
    assert lines[0] == "  Rendered by its Helm releases: 2 objects change"
    assert any("~  update   kueue: Deployment kueue-system/kueue-controller-manager: "
               "spec.template.spec.containers[0].image" in line for line in lines)
    assert any("-  delete   kueue: ClusterRole _cluster/" in line for line in lines)


def test_a_one_line_change_is_one_line_where_the_charts_come_from_beside_the_checkout(tmp_path: Path):
    """With ../shared beside the checkout (as CI has it), the base revision, synthesized in a temporary copy,
    renders the same charts as the working tree: no rendered object shows up as created."""
    import os

    import pytest

    shared = PROJECT_DIR.parent / "shared"
    if not (shared / "upstream" / "charts").is_dir():
        pytest.skip(f"needs the charts at {shared / 'upstream' / 'charts'} (../shared): absent")
    clone = tmp_path / "work" / "repo"
    git = _clone(clone)
    (tmp_path / "work" / "shared").symlink_to(shared.resolve())
    stack_file = clone / "Pulumi.local.yaml"
    stack_file.write_text(stack_file.read_text().replace("storage: 100Gi", "storage: 200Gi", 1))
    subprocess.run([*git, "commit", "--quiet", "-am", "more storage for research"], cwd=clone, check=True)
    # Only the checkout's own ../shared: no chart folder named in the environment, an empty pull cache.
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("MLPLATFORM_CHARTS", "MLPLATFORM_UPSTREAM", "MLPLATFORM_PULL_CHARTS")}
    environment["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    result = subprocess.run([sys.executable, "-m", "synth.diff", "--base", "HEAD~1"], cwd=clone,
                            capture_output=True, text=True, check=True, env=environment)
    changes = [line for line in result.stdout.splitlines() if line.lstrip().startswith(("+", "~", "-"))]
    assert changes == ["  ~  update   kubernetes:core/v1:ResourceQuota  team-research-quota: "
                       "spec.hard.requests.storage: 100Gi -> 200Gi"], result.stdout
    # Only the stack file changed: only its stack (team-vision is on dev) is synthesized, and it says so.
    assert "synthesizing local at both" in result.stderr
    assert "Stack dev" not in result.stdout
