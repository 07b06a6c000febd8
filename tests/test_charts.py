"""Where charts come from on a fresh clone: a release not rendered is a counted warning that says what was not
checked and how to get the chart; with MLPLATFORM_PULL_CHARTS=1 the synth pulls the pinned charts itself,
digest-checked, into a cache that a failed pull leaves as it was.

The chart repository is real Helm (an index.yaml and packaged charts, made here from ../shared/upstream/charts)
served over HTTP on loopback."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from synth import pipeline, render
from synth.summary import summarize
from versions import CHARTS, FAKE_GPU_OPERATOR, JOBSET, KUBE_PROMETHEUS_STACK, KUEUE

LOCAL_CHARTS = (FAKE_GPU_OPERATOR, JOBSET, KUBE_PROMETHEUS_STACK, KUEUE)


@pytest.fixture
def no_charts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh clone's view: no ../shared, no chart folder named, an empty pull cache (returned)."""
    cache = tmp_path / "cache" / "mlplatform" / "charts"
    monkeypatch.setattr(render, "UPSTREAM_DIR", tmp_path / "no-shared")
    monkeypatch.setattr(render, "PULL_CACHE", cache)
    monkeypatch.setattr(render, "PULLED", render.Pulled())
    monkeypatch.delenv(render.CHARTS_ENV, raising=False)
    monkeypatch.delenv(render.PULL_ENV, raising=False)
    render.clear_caches()
    yield cache
    render.clear_caches()


@pytest.fixture
def chart_repository(tmp_path: Path, upstream: Path) -> Iterator[str]:
    """A Helm chart repository on loopback holding the local stack's charts at their pins."""
    import helm_python as helm

    served = tmp_path / "repository"
    served.mkdir()
    for chart in LOCAL_CHARTS:
        helm.package(upstream / "charts" / f"{chart.name}-{chart.version}", destination=served)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    helm.repo_index_generate(served, base_url=url)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield url
    server.shutdown()
    server.server_close()


def _pinned_at(monkeypatch: pytest.MonkeyPatch, url: str, digests: dict[str, str | None]) -> None:
    """versions.CHARTS as if the local stack's charts were published at `url` with these digests."""
    served = [dataclasses.replace(chart, repository=url, digest=digests.get(chart.name)) for chart in LOCAL_CHARTS]
    others = [chart for chart in CHARTS if chart not in LOCAL_CHARTS]
    monkeypatch.setattr(render, "CHARTS", [*served, *others])


def _digest(url: str, chart: str) -> str:
    import helm_python as helm

    index = helm.repo_index(url)
    return "sha256:" + str(index["entries"][chart][0]["digest"]).removeprefix("sha256:")


def test_a_fresh_clone_says_loudly_which_releases_it_did_not_render(no_charts: Path):
    result = pipeline.run("local")
    summary = summarize(result.synthesis, Path("out/local"), result.violations, result.rendering, result.applied)
    assert sorted(result.rendering.unavailable) == ["fake-gpu-operator", "jobset", "kube-prometheus-stack", "kueue"]
    assert "Warnings: 4" in summary
    warning = next(w for w in result.synthesis.warnings if w.startswith("Helm release kueue not rendered"))
    assert "was not checked (schemas, CEL rules, policies, placement, requests per pool, checkov)" in warning
    assert "helm pull oci://registry.k8s.io/kueue/charts/kueue --version 0.19.2 --untar" in warning
    assert "MLPLATFORM_PULL_CHARTS=1" in warning
    placement = summary.splitlines().index(next(line for line in summary.splitlines()
                                                 if line.startswith("Placement:")))
    assert summary.splitlines()[placement + 1] == ("  DID NOT RUN over the releases not rendered: fake-gpu-operator, "
                                                    "jobset, kube-prometheus-stack, kueue (see Warnings)")


def test_make_synth_pulls_the_pinned_charts_itself_checking_their_digests(
        no_charts: Path, chart_repository: str, monkeypatch: pytest.MonkeyPatch):
    _pinned_at(monkeypatch, chart_repository, {c.name: _digest(chart_repository, c.name) for c in LOCAL_CHARTS})
    monkeypatch.setenv(render.PULL_ENV, "1")
    result = pipeline.run("local")
    assert result.rendering.unavailable == {}
    assert sorted(result.rendering.releases) == ["fake-gpu-operator", "jobset", "kube-prometheus-stack", "kueue"]
    assert sorted(path.name for path in no_charts.iterdir()) == [
        "fake-gpu-operator-0.2.0", "jobset-0.12.0", "kube-prometheus-stack-88.5.3", "kueue-0.19.2"]
    assert not [w for w in result.synthesis.warnings if "not rendered" in w or "pulled" in w]
    assert result.applied is not None and result.applied.placement.checked > 0


def test_a_chart_whose_digest_is_not_the_pinned_one_is_refused_and_not_cached(
        no_charts: Path, chart_repository: str, monkeypatch: pytest.MonkeyPatch):
    _pinned_at(monkeypatch, chart_repository, {KUEUE.name: "sha256:" + "0" * 64})
    monkeypatch.setenv(render.PULL_ENV, "1")
    with pytest.raises(render.ChartUnavailable, match=r"kueue 0.19.2 pulled from .* has digest sha256:[0-9a-f]{64}, "
                                                       r"not the pinned sha256:0{64}: not used, not cached"):
        render._load(KUEUE.name, KUEUE.version, KUEUE.repository)
    assert not render.charts_available()
    assert not no_charts.exists() or not any(no_charts.iterdir())
    assert not [path for path in no_charts.parent.iterdir() if path.name.startswith(".charts-pull-")]


def test_a_chart_pulled_without_a_pinned_digest_is_named_with_the_digest_to_pin(
        no_charts: Path, chart_repository: str, monkeypatch: pytest.MonkeyPatch):
    _pinned_at(monkeypatch, chart_repository, {})
    monkeypatch.setenv(render.PULL_ENV, "1")
    render._load(KUEUE.name, KUEUE.version, KUEUE.repository)
    assert render.pull_warnings() == [
        f"chart kueue-0.19.2 was pulled without a pinned digest to check it against; it has "
        f"{_digest(chart_repository, 'kueue')}: pin it as Chart(..., digest=\"{_digest(chart_repository, 'kueue')}\") "
        "in versions.py"]


def test_where_no_repository_answers_one_line_says_so_and_the_cache_stays_empty(
        no_charts: Path, monkeypatch: pytest.MonkeyPatch):
    import socket

    with socket.socket() as closed:  # a loopback port nothing listens on
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    _pinned_at(monkeypatch, url, {})
    monkeypatch.setenv(render.PULL_ENV, "1")
    result = pipeline.run("local")
    unrendered = [w for w in result.synthesis.warnings if "not rendered" in w]
    assert len(unrendered) == 1, unrendered
    assert unrendered[0].startswith("Helm release fake-gpu-operator, jobset, kube-prometheus-stack, kueue not rendered")
    assert f"MLPLATFORM_PULL_CHARTS=1, but pulling fake-gpu-operator 0.2.0 from {url} failed" in unrendered[0]
    assert not render.charts_available()
