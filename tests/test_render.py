"""Every Helm release rendered offline by Helm's own engine, from the real charts at our pins."""

from __future__ import annotations

import functools
import json

import pytest

from synth import PROJECT_DIR, render
from synth.engine import Synthesis
from synth.render import (CHART_ANNOTATION, HOOK_ANNOTATION, RELEASE_ANNOTATION, Rendering, render_stack,
                          stack_rendering)
from synth.stackfile import available_stacks
from synth.summary import summarize
from versions import KUBE_PROMETHEUS_STACK


def _needs(rendering: Rendering, release: str) -> None:
    if release in rendering.unavailable:
        pytest.skip(f"chart of release {release} unavailable: {rendering.unavailable[release]}")


@pytest.fixture(scope="module")
def local() -> Rendering:
    if not render.charts_available():
        pytest.skip(f"needs the charts in one of {render.chart_dirs()} (../shared/upstream/charts): absent")
    return stack_rendering("local")


def test_every_release_of_every_stack_renders_or_says_how_to_get_its_chart() -> None:
    if not render.charts_available():
        pytest.skip(f"needs the charts in one of {render.chart_dirs()} (../shared/upstream/charts): absent")
    for stack in available_stacks(PROJECT_DIR):
        rendering = stack_rendering(stack)
        for name, why in rendering.unavailable.items():
            assert "helm pull" in why and name, f"{stack}: {name}: {why}"
        for name, release in rendering.releases.items():
            assert release.objects, f"{stack}: {name} renders nothing"


def test_objects_are_labelled_with_release_and_chart_and_include_hooks_and_crds(local: Rendering) -> None:
    _needs(local, "kube-prometheus-stack")
    kps = local.releases["kube-prometheus-stack"]
    for obj in kps.objects:
        annotations = obj["metadata"]["annotations"]
        assert annotations[RELEASE_ANNOTATION] == "monitoring/kube-prometheus-stack"
        assert annotations[CHART_ANNOTATION] == f"kube-prometheus-stack-{KUBE_PROMETHEUS_STACK.version}"
    kinds = {(obj["kind"], obj["metadata"]["name"]) for obj in kps.objects}
    # CRDs from the crds subchart's crds/ folder; the operator's admission webhook Jobs are hooks.
    assert ("CustomResourceDefinition", "servicemonitors.monitoring.coreos.com") in kinds
    hooks = [obj for obj in kps.objects if HOOK_ANNOTATION in obj["metadata"]["annotations"]]
    assert {obj["kind"] for obj in hooks} >= {"Job"}
    # `helm install` creates no test hook.
    assert not [obj for obj in hooks if "test" in obj["metadata"]["annotations"][HOOK_ANNOTATION]]
    # A disabled subchart renders nothing (windowsMonitoring is off).
    assert not [obj for obj in kps.objects if "windows-exporter" in obj["metadata"]["name"]]
    # Namespaced objects land in the release's namespace, as Helm applies them.
    deployments = [obj for obj in kps.objects if obj["kind"] == "Deployment"]
    assert deployments and all(obj["metadata"]["namespace"] == "monitoring" for obj in deployments)


def test_rendering_honours_the_charts_kube_version_constraint(local: Rendering) -> None:
    """The dry run, unlike Helm's plain render, refuses a Kubernetes version the chart does not support."""
    from helm_python import HelmError

    _needs(local, "kube-prometheus-stack")
    chart = KUBE_PROMETHEUS_STACK
    with pytest.raises(HelmError, match="kubeVersion"):
        render._render_cached(chart.name, chart.version, chart.repository, "kps", "monitoring", "{}",
                              "v1.20.0", ())


def test_a_chart_found_nowhere_is_named_with_how_to_get_it(local_synth: Synthesis, tmp_path,
                                                            monkeypatch) -> None:
    pytest.importorskip("helm_python")
    monkeypatch.setattr(render, "chart_dirs", lambda: [tmp_path])
    monkeypatch.setattr(render, "_load", functools.cache(render._load.__wrapped__))
    rendering = render_stack(local_synth)
    assert not rendering.releases
    assert set(rendering.unavailable) == {"kube-prometheus-stack", "kueue", "fake-gpu-operator", "jobset"}
    why = rendering.unavailable["kueue"]
    assert "helm pull oci://registry.k8s.io/kueue/charts/kueue --version 0.19.2 --untar" in why
    summary = summarize(local_synth, tmp_path, [], rendering)
    assert "kueue" in summary and "NOT RENDERED" in summary


def test_rendered_objects_are_written_per_release(local: Rendering, tmp_path) -> None:
    from synth.output import write_rendering

    write_rendering(local, tmp_path)
    for name, release in local.releases.items():
        files = sorted((tmp_path / "rendered" / name).glob("*.json"))
        assert len(files) == len(release.objects)
        assert json.loads(files[0].read_text())["metadata"]["annotations"][RELEASE_ANNOTATION].endswith(name)


def test_a_release_that_skips_crds_renders_none_of_its_crds_folders(local_synth: Synthesis, local: Rendering) -> None:
    import dataclasses

    _needs(local, "kube-prometheus-stack")
    resources = [dataclasses.replace(r, inputs={**r.inputs, "skipCrds": True})
                 if r.inputs.get("name") == "kube-prometheus-stack" else r for r in local_synth.resources]
    rendering = render_stack(dataclasses.replace(local_synth, resources=resources))
    kinds = {obj["kind"] for obj in rendering.releases["kube-prometheus-stack"].objects}
    assert "CustomResourceDefinition" not in kinds and "Deployment" in kinds
