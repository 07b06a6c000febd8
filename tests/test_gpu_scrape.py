"""The gpu-metrics scrape's labels, checked by a real Prometheus scraping exporter-shaped metrics offline.

The Prometheus that kube-prometheus-stack deploys (as `make e2e-tools` builds it, beside promtool; else any
`prometheus` on PATH, as the Debian/Ubuntu package gives it) scrapes a local HTTP server that serves the same
series shapes as dcgm-exporter 4.8.2 (workload labels left out on a free GPU, `Hostname`), its successors
(`hostname`) and the fake GPU operator's exporter (workload labels present and empty on a free GPU), with the
ServiceMonitor's settings: honorLabels off, and its metricRelabelings. The target carries the exporter pod's own
namespace/pod/container, as prometheus-operator's target relabelling gives it. And a team's exporter, scraped as
a team's ServiceMonitor is (Prometheus's default scrape class), cannot make its series the platform's.
"""

from __future__ import annotations

import http.server
import json
import re
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.monitoring import gpu_metrics_metric_relabelings
from e2e.tools import WRAPPERS, built_or_on_path
from tests.test_monitoring import custom_resource, monitor
from versions import E2E_TOOLS

PROMETHEUS = built_or_on_path("prometheus")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus not found: `make e2e-tools` builds the one we deploy (or put any "
                               "prometheus on PATH); the scrape tests are skipped")

EXPOSITION = b"""# TYPE DCGM_FI_DEV_GPU_UTIL gauge
DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-a",Hostname="node-a",namespace="vision",pod="train-0",container="trainer"} 10
DCGM_FI_DEV_GPU_UTIL{gpu="1",UUID="GPU-b",Hostname="node-a"} 0
DCGM_FI_DEV_GPU_UTIL{gpu="2",UUID="GPU-c",Hostname="node-a",namespace="",pod="",container=""} 0
DCGM_FI_DEV_GPU_UTIL{gpu="3",UUID="GPU-d",hostname="node-a"} 0
"""
EXPORTER_POD = {"namespace": "monitoring", "pod": "dcgm-exporter-7xk2p", "container": "exporter", "node": "node-a"}
# prometheus-operator's names for relabel fields, and Prometheus's own.
FIELDS = {"sourceLabels": "source_labels", "targetLabel": "target_label"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def exporter_serving(exposition: bytes) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(exposition)

        def log_message(self, *args: Any) -> None:
            pass

    exporter = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=exporter.serve_forever, daemon=True).start()
    return exporter


def prometheus_config(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """prometheus-operator's relabel rules as Prometheus's configuration file spells them."""
    return [{FIELDS.get(k, k): v for k, v in rule.items()} for rule in rules]


@cache
def prompt_discovery() -> tuple[str, ...]:
    """Prometheus hands new targets to its scrapers at most every 5 s (its hidden flag
    --scrape.discovery-reload-interval), so a fresh server's first scrape came about 5 s after its start: a
    shorter interval where the server has the flag (the one we deploy does; an older one on PATH may not). It
    changes when the first scrape happens, not what a scrape keeps."""
    assert PROMETHEUS is not None
    flag = "--scrape.discovery-reload-interval=100ms"
    probe = subprocess.run([PROMETHEUS, flag, "--version"], capture_output=True, timeout=30, check=False)
    return (flag,) if probe.returncode == 0 else ()


def scrape(directory: Path, exposition: bytes, job: dict[str, Any], target_labels: dict[str, str], query: str,
           count: int) -> list[dict[str, Any]]:
    """What a real Prometheus holds for `query` after a scrape of `exposition` by the scrape config `job`, from a
    target with `target_labels`, once it holds some series (a scrape's samples are stored together): `count`."""
    assert PROMETHEUS is not None
    exporter = exporter_serving(exposition)
    config = {"global": {"scrape_interval": "1s"}, "scrape_configs": [job | {"static_configs": [
        {"targets": [f"127.0.0.1:{exporter.server_address[1]}"], "labels": target_labels}]}]}
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    server = subprocess.Popen([PROMETHEUS, f"--config.file={directory / 'prometheus.yml'}",
                               f"--storage.tsdb.path={directory / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                               *prompt_discovery()], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
        deadline = time.monotonic() + 30
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not result:
            time.sleep(0.2)
            try:
                result = json.load(urllib.request.urlopen(url, timeout=2))["data"]["result"]
            except OSError:
                continue
        assert len(result) == count, f"Prometheus holds {len(result)} series, not {count}, after 30 s: {result}"
        return result
    finally:
        server.terminate()
        server.wait(timeout=30)
        exporter.shutdown()


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    (endpoint,) = custom_resource(monitor(), "ServiceMonitor").inputs["spec"]["endpoints"]
    job = {"job_name": "gpu-metrics", "honor_labels": endpoint["honorLabels"],
           "metric_relabel_configs": prometheus_config(endpoint["metricRelabelings"])}
    result = scrape(tmp_path_factory.mktemp("prometheus"), EXPOSITION, job, EXPORTER_POD, "DCGM_FI_DEV_GPU_UTIL", 4)
    return {r["metric"]["gpu"]: r["metric"] for r in result}


@needs_prometheus
def test_a_gpu_in_use_names_its_workload(scraped: dict[str, dict[str, str]]):
    assert {k: scraped["0"].get(k) for k in ("namespace", "pod", "container")} == {
        "namespace": "vision", "pod": "train-0", "container": "trainer"}


@needs_prometheus
@pytest.mark.parametrize("gpu", ["1", "2", "3"], ids=["label-left-out", "label-empty", "new-hostname-label"])
def test_a_free_gpu_names_no_workload_not_even_the_exporters(scraped: dict[str, dict[str, str]], gpu: str):
    assert not {"namespace", "pod", "container"} & set(scraped[gpu])
    assert not any(k.startswith("exported_") for k in scraped[gpu])


@needs_prometheus
@pytest.mark.parametrize("gpu", ["0", "3"])
def test_both_hostname_spellings_end_as_hostname(scraped: dict[str, dict[str, str]], gpu: str):
    assert scraped[gpu]["hostname"] == "node-a" and "Hostname" not in scraped[gpu]


def test_the_scrape_tests_prometheus_is_built_as_promtool_is():
    """make test finds the server where `make e2e-tools` builds it, from the Prometheus we deploy; the wrapper module
    names it a tool, so that its go.sum holds what the server needs beyond promtool."""
    tools = {tool.name: tool for tool in E2E_TOOLS}
    server, promtool = tools["prometheus"], tools["promtool"]
    assert (server.module, server.version, server.wrapper, server.ldflags) == (
        promtool.module, promtool.version, promtool.wrapper, promtool.ldflags)
    assert server.package == "github.com/prometheus/prometheus/cmd/prometheus"
    assert re.search(rf"^\s*(tool\s+)?{re.escape(server.package)}$",
                     (WRAPPERS / str(server.wrapper) / "go.mod").read_text(), flags=re.MULTILINE)


# A team's exporter behind a Service named kube-state-metrics, as a team's ServiceMonitor scrapes it: the job after
# the Service, the target's namespace (enforced), pod, container, service and endpoint (prometheus-operator's
# target relabelling), then the default scrape class's relabelings. It prints kube-state-metrics' series with the
# platform's mark, and series named like the platform's recording rules.
FORGED = b"""# TYPE kube_pod_container_resource_requests gauge
kube_pod_container_resource_requests{namespace="vision",pod="train-0",node="node-a",resource="nvidia_com_gpu",\
mlplatform_source="platform"} -2
# TYPE mlplatform:gpu_price_per_hour gauge
mlplatform:gpu_price_per_hour{pool="a100"} 0
# TYPE namespace_pool:mlplatform_gpus_allocated:count gauge
namespace_pool:mlplatform_gpus_allocated:count{namespace="vision",pool="a100"} -8
# TYPE team_throughput gauge
team_throughput{gpu="0"} 42
"""
TEAM_TARGET = {"job": "kube-state-metrics", "namespace": "web", "pod": "forger-5d8f9", "container": "forger",
               "service": "kube-state-metrics", "endpoint": "http"}


@pytest.fixture(scope="module")
def team_scrape(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    values = next(r for r in monitor().releases() if r.inputs["name"] == "kube-prometheus-stack").inputs["values"]
    (scrape_class,) = values["prometheus"]["prometheusSpec"]["scrapeClasses"]
    job = {"job_name": "serviceMonitor/web/forger/0", "honor_labels": False,
           "relabel_configs": prometheus_config(scrape_class["relabelings"]),
           "metric_relabel_configs": prometheus_config(scrape_class["metricRelabelings"])}
    # Prometheus's own series of the scrape (up, scrape_*) aside.
    result = scrape(tmp_path_factory.mktemp("team"), FORGED, job, TEAM_TARGET,
                    '{job="kube-state-metrics", __name__!="up", __name__!~"scrape_.+"}', 2)
    return {r["metric"]["__name__"]: r["metric"] for r in result}


@needs_prometheus
def test_a_team_scrape_cannot_carry_the_platforms_mark(team_scrape: dict[str, dict[str, str]]):
    requests = team_scrape["kube_pod_container_resource_requests"]
    # The exporter's claim is kept as exported_*, the target's own value stands: the GPU rules do not read it.
    assert (requests["mlplatform_source"], requests["exported_mlplatform_source"]) == ("other", "platform")
    assert requests["namespace"] == "web"


@needs_prometheus
def test_a_team_scrape_brings_in_no_series_named_like_the_platforms_rules(team_scrape: dict[str, dict[str, str]]):
    assert set(team_scrape) == {"kube_pod_container_resource_requests", "team_throughput"}
