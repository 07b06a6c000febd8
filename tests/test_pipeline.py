"""One pipeline for `make synth` and `make review`: the same stack gives the same verdict in both.

Each test here failed before the pipeline existed: a valid `monitoring.namespace` broke the synth, the review
never judged the charts' own workloads, and CI's stack reader let `gpus: true` through as 1.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from config.errors import ConfigError
from policies import rules
from synth import PROJECT_DIR, delivery, pipeline, render
from synth.diff import checks_in
from synth.review import policy_lines


def project_with(tmp_path: Path, edit) -> Path:
    """A copy of the project's `local` stack file, changed by `edit`, beside the project's Pulumi.yaml."""
    shutil.copy(PROJECT_DIR / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    document = yaml.safe_load((PROJECT_DIR / "Pulumi.local.yaml").read_text())
    edit(document["config"])
    (tmp_path / "Pulumi.local.yaml").write_text(yaml.safe_dump(document))
    return tmp_path


def observability(config: dict) -> None:
    config["mlplatform:monitoring"]["namespace"] = "observability"


def rendered(result: pipeline.Result) -> None:
    if not result.rendering.releases or result.rendering.unavailable:
        pytest.skip(f"needs the charts in one of {render.chart_dirs()} (../shared/upstream/charts): "
                    f"{sorted(result.rendering.unavailable) or 'absent'}")


def test_monitoring_in_a_namespace_of_its_own_breaks_no_rule(tmp_path):
    project = project_with(tmp_path, observability)
    result = pipeline.run("local", project_dir=project, out_dir=tmp_path / "out")
    rendered(result)
    exporters = [o for o in result.rendering.objects()
                 if o["kind"] == "DaemonSet" and o["metadata"]["namespace"] == "observability"]
    assert exporters, "node-exporter runs in the stack's monitoring namespace"
    assert result.mandatory == []
    assert not result.failed


def test_the_review_reports_what_the_synth_found_in_the_charts_workloads(tmp_path, monkeypatch):
    # With no namespace exempt, the charts' node agents break the host-access rule: the synth sees it in the
    # rendered objects, and the pull-request comment must say so too.
    monkeypatch.setattr(rules, "NODE_AGENT_NAMESPACES", frozenset())
    project = project_with(tmp_path, observability)
    result = pipeline.run("local", project_dir=project, out_dir=tmp_path / "out")
    rendered(result)
    assert result.mandatory, "the charts' node agents reach into their node"
    lines = policy_lines(checks_in(tmp_path / "out"))
    assert lines[0] == f"policies: {len(result.mandatory)} mandatory and " \
                       f"{len(result.violations) - len(result.mandatory)} advisory violations"
    assert [line.strip() for line in lines[1:]] == [str(v) for v in result.violations]


def test_ci_reads_a_stack_file_as_strictly_as_pulumi_up(tmp_path):
    def boolean_gpus(config: dict) -> None:
        config["mlplatform:teams"][0]["quota"]["gpus"] = True

    project = project_with(tmp_path, boolean_gpus)
    with pytest.raises(ConfigError, match=r"mlplatform:teams\[0\]\.quota\.gpus"):
        delivery.check("local", project)
