"""The gpu-metrics scrape's labels, checked by a real Prometheus scraping exporter-shaped metrics offline.

The Prometheus that kube-prometheus-stack deploys (as `make e2e-tools` builds it, beside promtool; else any
`prometheus` on PATH, as the Debian/Ubuntu package gives it) scrapes a local HTTP server that serves the same
series shapes as dcgm-exporter 4.8.2 (workload labels left out on a free GPU, `Hostname`), its successors
(`hostname`) and the fake GPU operator's exporter (workload labels present and empty on a free GPU), with the
ServiceMonitor's settings: honorLabels off, and its metricRelabelings. The target carries the exporter pod's own
namespace/pod/container, as prometheus-operator's target relabelling gives it.
"""

from __future__ import annotations

import http.server
import json
import re
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
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


class Exporter(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(EXPOSITION)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, str]]]:
    assert PROMETHEUS is not None
    exporter = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Exporter)
    threading.Thread(target=exporter.serve_forever, daemon=True).start()
    (endpoint,) = custom_resource(monitor(), "ServiceMonitor").inputs["spec"]["endpoints"]
    directory = tmp_path_factory.mktemp("prometheus")
    config = {"global": {"scrape_interval": "1s"}, "scrape_configs": [{
        "job_name": "gpu-metrics", "honor_labels": endpoint["honorLabels"],
        "static_configs": [{"targets": [f"127.0.0.1:{exporter.server_address[1]}"], "labels": EXPORTER_POD}],
        "metric_relabel_configs": [{FIELDS.get(k, k): v for k, v in rule.items()}
                                   for rule in endpoint["metricRelabelings"]]}]}
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    server = subprocess.Popen([PROMETHEUS, f"--config.file={directory / 'prometheus.yml'}",
                               f"--storage.tsdb.path={directory / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/api/v1/query?query=DCGM_FI_DEV_GPU_UTIL"
        deadline = time.monotonic() + 30
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline and len(result) < 4:
            time.sleep(0.5)
            try:
                result = json.load(urllib.request.urlopen(url, timeout=2))["data"]["result"]
            except OSError:
                continue
        assert len(result) == 4, "Prometheus scraped nothing in 30 s"
        yield {r["metric"]["gpu"]: r["metric"] for r in result}
    finally:
        server.terminate()
        server.wait(timeout=30)
        exporter.shutdown()


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
