"""`make verify`: its objects pass the strict schemas, and its logic runs against recorded API responses.

tests/recorded/verify-dev.json holds, in the API's own shapes, a verify run on dev: both GPU pools scale from
zero, the pods see their GPUs, the metrics arrive, the rules are loaded. `python -m verify <stack> --record
<file>` writes the same format from a real cluster.
"""

from __future__ import annotations

import contextlib
import copy
import http.server
import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.provider import exec_kubeconfig
from synth.schema import check_manifests
from core.outputs import PlatformOutputs, PoolOutput
from verify.api import ApiError, HttpApi
from verify.probe import gpu_pod, gpu_resource, namespace
from verify.released import deleted_with_the_cluster, wait_released
from verify.run import NEEDS_RUNNING_PODS, Verifier, table

RECORDING = json.loads((Path(__file__).parent / "recorded" / "verify-dev.json").read_text())


class ReplayedApi:
    """Answers each (method, path) with its recorded responses in order; a call nobody recorded fails.

    A GET past its last recorded response gets that one again: polling an object that does not change.
    """

    def __init__(self, exchanges: list[dict[str, Any]]) -> None:
        self.queues: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for exchange in exchanges:
            self.queues.setdefault((exchange["method"], exchange["path"]), []).append(exchange)
        self.calls: list[tuple[str, str]] = []
        self.bodies: list[dict[str, Any]] = []

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        self.calls.append((method, path))
        if body is not None:
            self.bodies.append(body)
        queue = self.queues.get((method, path))
        assert queue, f"no recorded response left for {method} {path}"
        exchange = queue[0] if method == "GET" and len(queue) == 1 else queue.pop(0)
        if exchange["status"] >= 400:
            raise ApiError(exchange["status"], str(exchange["body"]))
        return exchange["body"]

    def unused(self) -> list[tuple[str, str]]:
        return [key for key, queue in self.queues.items() for _ in queue[1 if key[0] == "GET" else 0:]]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def verifier(api: ReplayedApi, outputs: dict[str, Any] | None = None, **options: Any) -> Verifier:
    clock = Clock()
    return Verifier(api, outputs or RECORDING["outputs"], run_id=RECORDING["runId"], clock=clock,
                    sleep=clock.sleep, poll=10, **options)


def exchanges_with(change: Any) -> list[dict[str, Any]]:
    exchanges = copy.deepcopy(RECORDING["exchanges"])
    change(exchanges)
    return exchanges


def test_the_objects_verify_creates_pass_the_strict_schemas(local_synth):
    (l4, a10g) = RECORDING["outputs"]["gpuPools"]
    renamed = l4 | {"name": "shared", "sharing": {"timeSlicing": {"replicas": 4, "renameByDefault": True}}}
    pools = [PoolOutput.read(p) for p in (l4, a10g, renamed, *local_synth.outputs["gpuPools"])]
    report = check_manifests([namespace(), *(gpu_pod(pool, "a1b2c3") for pool in pools if gpu_resource(pool))])
    assert not report.errors and not report.unchecked, report.errors + report.unchecked
    assert len(report.checked) == 1 + len(pools)


def test_a_gpu_pod_lands_only_on_its_pool_holds_one_gpu_and_meets_restricted_pod_security():
    (l4, _) = RECORDING["outputs"]["gpuPools"]
    pod = gpu_pod(PoolOutput.read(l4), "x")
    assert pod["spec"]["nodeSelector"] == {"mlplatform.io/pool": "l4"}
    assert pod["spec"]["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present",
                                           "effect": "NoSchedule"}]
    (container,) = pod["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert namespace()["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_shared_gpus_are_asked_for_by_their_resource_and_mixed_mig_pools_are_skipped_by_name():
    (l4, _) = RECORDING["outputs"]["gpuPools"]
    assert gpu_resource(PoolOutput.read(l4)) == "nvidia.com/gpu"  # time-slicing without renaming: shares are nvidia.com/gpu
    assert gpu_resource(PoolOutput.read(l4 | {"sharing": {"timeSlicing": {"replicas": 2, "renameByDefault": True}}})) == \
        "nvidia.com/gpu.shared"
    assert gpu_resource(PoolOutput.read(l4 | {"sharing": {"migStrategy": "mixed"}})) is None
    outputs = RECORDING["outputs"] | {"gpuPools": [l4 | {"name": "h100", "sharing": {"migStrategy": "mixed"}}]}
    api = ReplayedApi([e for e in RECORDING["exchanges"] if e["path"] == "/api/v1/namespaces"
                       or e["path"].endswith(("/rules", "/namespaces/mlplatform-verify"))])
    (result,), _ = verifier(api, outputs).run()
    assert result.skipped.startswith("mixed MIG") and result.ok and not result.pod


def test_a_run_on_dev_scales_each_pool_from_zero_and_reports_its_timings():
    api = ReplayedApi(RECORDING["exchanges"])
    results, rule_problems = verifier(api).run()
    assert not api.unused()  # every recorded response was asked for: cleanup included
    assert api.calls[-1] == ("DELETE", "/api/v1/namespaces/mlplatform-verify")
    assert rule_problems == []  # Watchdog fires by design and is not one of ours
    l4, a10g = results
    assert (l4.pool, l4.node, l4.new_node, l4.ok) == ("l4", "ip-10-20-3-17.ec2.internal", True, True)
    assert (l4.scale_up_s, l4.scheduled_s, l4.finished_s) == (209, 220, 231)
    assert l4.gpu_seen == "GPU 0: NVIDIA L4"
    assert l4.metrics_s == 10  # one poll after the node came up
    assert (a10g.scale_up_s, a10g.gpu_seen, a10g.metrics_s) == (300, "GPU 0: NVIDIA A10G", 0)
    printed = table(results, rule_problems)
    assert printed.splitlines()[1].split()[:6] == ["l4", "ip-10-20-3-17.ec2.internal", "yes", "209s", "220s", "231s"]
    assert printed.endswith("alert rules: all loaded, none firing")


def test_a_node_outside_the_pool_a_blind_pod_and_a_firing_alert_are_each_reported():
    def break_things(exchanges: list[dict[str, Any]]) -> None:
        for exchange in exchanges:
            if exchange["path"] == "/api/v1/nodes/ip-10-20-3-17.ec2.internal":
                exchange["body"]["metadata"]["labels"]["mlplatform.io/pool"] = "system"
            elif exchange["path"].endswith("gpu-a10g-x4-a1b2c3/log"):
                exchange["body"] = "NVIDIA_VISIBLE_DEVICES=\nnvidia-smi: absent\n"
            elif exchange["path"].endswith("/rules"):
                (group,) = [g for g in exchange["body"]["data"]["groups"] if g["name"] == "mlplatform-gpu"]
                group["rules"] = [r | {"state": "firing"} if r["name"] == "GpuXidError" else r
                                  for r in group["rules"] if r["name"] != "GpuTemperatureHigh"]

    api = ReplayedApi(exchanges_with(break_things))
    results, rule_problems = verifier(api).run()
    assert results[0].problems == ["node ip-10-20-3-17.ec2.internal is not in pool l4: {'mlplatform.io/pool': "
                                   "'system'}"]
    assert results[1].problems[0].startswith("the pod saw no GPU")
    assert rule_problems == ["GpuTemperatureHigh is not loaded", "GpuXidError is firing"]
    assert "FAILED: node ip-10-20-3-17.ec2.internal is not in pool l4" in table(results, rule_problems)


def test_metrics_that_never_arrive_fail_the_pool_after_the_metrics_timeout():
    def no_metrics(exchanges: list[dict[str, Any]]) -> None:
        for exchange in exchanges:
            if "/query?" in exchange["path"]:
                exchange["body"]["data"]["result"] = []

    api = ReplayedApi(exchanges_with(no_metrics))
    results, _ = verifier(api, metrics_timeout=60).run()
    assert results[0].problems == ["no GPU metrics of ip-10-20-3-17.ec2.internal in Prometheus after 60s"]
    assert results[0].finished_s == 231  # the pod itself was fine


def test_a_pool_that_never_gets_a_node_times_out_and_is_still_cleaned_up():
    pending = next(e for e in RECORDING["exchanges"] if e["method"] == "GET" and e["path"].endswith("gpu-l4-a1b2c3"))
    outputs = RECORDING["outputs"] | {"gpuPools": RECORDING["outputs"]["gpuPools"][:1]}
    exchanges = [e for e in RECORDING["exchanges"] if e["method"] in ("POST", "DELETE") and "a10g" not in json.dumps(e)]
    exchanges.append(pending)
    exchanges += [e for e in RECORDING["exchanges"] if e["path"].endswith("/rules")]
    api = ReplayedApi(exchanges)
    (result,), _ = verifier(api, outputs, timeout=30).run()
    assert result.problems == ["not finished after 30s: no node came up"]
    assert api.calls.count(("GET", "/api/v1/namespaces/mlplatform-verify/pods/gpu-l4-a1b2c3")) == 5  # 0s to 40s
    assert ("DELETE", "/api/v1/namespaces/mlplatform-verify/pods/gpu-l4-a1b2c3") in api.calls
    assert not api.unused()


def test_a_failed_api_call_still_cleans_up():
    exchanges = exchanges_with(lambda ex: ex.insert(3, {"method": "GET", "path": ex[3]["path"], "status": 403,
                                                        "body": "forbidden"}))
    api = ReplayedApi(exchanges)
    with pytest.raises(ApiError):
        verifier(api).run()
    assert api.calls[-1] == ("DELETE", "/api/v1/namespaces/mlplatform-verify")


def test_on_kind_the_fake_gpu_the_device_plugin_allocated_is_what_the_pod_sees():
    def fake_gpus(exchanges: list[dict[str, Any]]) -> None:
        for exchange in exchanges:
            if exchange["path"].endswith("/log"):
                exchange["body"] = "NVIDIA_VISIBLE_DEVICES=GPU-fake-0\nnvidia-smi: absent\n"

    outputs = RECORDING["outputs"] | {"cloud": "kind"}
    results, _ = verifier(ReplayedApi(exchanges_with(fake_gpus)), outputs).run()
    assert [r.gpu_seen for r in results] == ["fake GPU GPU-fake-0", "fake GPU GPU-fake-0"]
    assert all(r.ok for r in results)
    # Where GPUs are real, a pod that could not run nvidia-smi saw no GPU.
    results, _ = verifier(ReplayedApi(exchanges_with(fake_gpus))).run()
    assert not any(r.ok for r in results)


@contextlib.contextmanager
def node_api() -> Iterator[tuple[str, list[tuple[str, str | None]]]]:
    """A local API server that knows one node, n1: its address, and each request's path and Authorization."""
    seen: list[tuple[str, str | None]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            seen.append((self.path, self.headers.get("Authorization")))
            body = json.dumps({"kind": "Node", "metadata": {"name": "n1"}}).encode()
            self.send_response(200 if self.path == "/api/v1/nodes/n1" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class names it)
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", seen
    finally:
        server.shutdown()



def test_the_http_api_authenticates_with_the_kubeconfigs_credential_plugin_once_per_token(tmp_path):
    """The same kubeconfig shape the stacks export (an exec plugin, no stored credentials), against a local server."""
    calls = tmp_path / "plugin-calls"
    plugin = ("import json, os, pathlib; p = pathlib.Path(os.environ['CALLS']); "
              "p.write_text(p.read_text() + 'x' if p.exists() else 'x'); "
              "assert json.loads(os.environ['KUBERNETES_EXEC_INFO'])['spec']['cluster']['server']; "
              "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1beta1', 'kind': 'ExecCredential', "
              "'status': {'token': 'k8s-aws-v1.abc', 'expirationTimestamp': '2999-01-01T00:00:00Z'}}))")
    with node_api() as (server, seen):
        config = yaml.safe_load(exec_kubeconfig("c", server, None, {
            "command": sys.executable, "args": ["-c", plugin], "env": [{"name": "CALLS", "value": str(calls)}],
            "provideClusterInfo": True, "interactiveMode": "Never"}))
        api = HttpApi(config)
        assert api.request("GET", "/api/v1/nodes/n1")["metadata"]["name"] == "n1"
        with pytest.raises(ApiError) as missing:
            api.request("GET", "/api/v1/nodes/n2")
        assert missing.value.status == 404
    assert [header for _, header in seen] == ["Bearer k8s-aws-v1.abc"] * 2
    assert calls.read_text() == "x"  # one token for both requests, until it expires


def test_where_pods_do_not_run_what_needs_them_is_not_applicable_rather_than_passed(local_synth):
    # make e2e's loopback cluster: kwok only marks pods Running, no Prometheus runs. The pod's placement is
    # checked; the GPU it saw, its metrics and the alert rules are reported NOT APPLICABLE, and never asked for.
    outputs = RECORDING["outputs"] | {"podsRun": False}
    needs_running_pods = ("/log", "/proxy/")
    api = ReplayedApi([e for e in RECORDING["exchanges"] if not any(part in e["path"] for part in needs_running_pods)])
    results, rule_problems = verifier(api, outputs).run()
    assert not [call for call in api.calls if any(part in call[1] for part in needs_running_pods)]
    assert rule_problems is None
    l4, a10g = results
    assert (l4.node, l4.new_node, l4.scale_up_s, l4.scheduled_s) == ("ip-10-20-3-17.ec2.internal", True, 209, 220)
    assert all(r.ok and r.not_applicable == NEEDS_RUNNING_PODS and not r.gpu_seen and r.metrics_s is None
               for r in results), results
    printed = table(results, rule_problems)
    assert printed.splitlines()[1].split()[5:9] == ["n/a", "n/a", "n/a", "ok;"]
    assert "finished, GPU seen, metrics: NOT APPLICABLE (pods do not run on this cluster)" in printed
    assert printed.endswith("alert rules: NOT APPLICABLE (pods do not run on this cluster): no Prometheus")
    assert "all loaded" not in printed
    # Stacks say whether pods run; one deployed before they did ran on a real cluster.
    assert local_synth.outputs["podsRun"] is True
    assert PlatformOutputs.read({}).pods_run and not PlatformOutputs.read({"podsRun": False}).pods_run


def test_the_http_api_authenticates_with_a_kubeconfigs_token():
    """An `existing` cluster's kubeconfig as a user writes it: a token, no credential plugin."""
    with node_api() as (server, seen):
        config = {"current-context": "c", "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                  "clusters": [{"name": "c", "cluster": {"server": server}}],
                  "users": [{"name": "u", "user": {"token": "sa-token"}}]}
        assert HttpApi(config).request("GET", "/api/v1/nodes/n1")["metadata"]["name"] == "n1"
    assert seen == [("/api/v1/nodes/n1", "Bearer sa-token")]


# ---- verify.released: a destroy waits until the cluster has deleted the disks of its volumes -------------------


def volume(name: str, policy: str, claim: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"persistentVolumeReclaimPolicy": policy}
    if claim:
        claim_namespace, claim_name = claim.split("/")
        spec["claimRef"] = {"namespace": claim_namespace, "name": claim_name}
    return {"metadata": {"name": name}, "spec": spec, "status": {"phase": "Released"}}


class Volumes:
    """The API server's PersistentVolumes, one list per request, as the CSI driver deletes them."""

    def __init__(self, *lists: list[dict[str, Any]]) -> None:
        self.lists = list(lists)
        self.paths: list[str] = []

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        self.paths.append(f"{method} {path}")
        return {"items": self.lists.pop(0) if len(self.lists) > 1 else self.lists[0]}


def test_the_wait_ends_once_every_volume_the_cluster_deletes_is_gone():
    prometheus = volume("pvc-1", "Delete", "monitoring/prometheus-db-0")
    kept = volume("pv-static", "Retain")  # the cluster never deletes it: nothing to wait for
    api, clock = Volumes([prometheus, kept], [prometheus, kept], [kept]), Clock()
    assert wait_released(api, timeout=60, poll=5, clock=clock, sleep=clock.sleep) == []
    assert api.paths == ["GET /api/v1/persistentvolumes"] * 3 and clock.now == 10


def test_the_wait_names_the_volumes_left_when_it_runs_out():
    api, clock = Volumes([volume("pvc-2", "Delete", "research/data")]), Clock()
    assert wait_released(api, timeout=30, poll=10, clock=clock, sleep=clock.sleep) == [
        "pvc-2 (claim research/data, Released)"]
    assert clock.now == 30


def test_only_volumes_with_the_delete_policy_are_the_clusters_to_delete():
    api = Volumes([volume("a", "Delete", "x/y"), volume("b", "Retain", "x/z")])
    assert deleted_with_the_cluster(api) == ["a (claim x/y, Released)"]


def test_while_it_waits_it_says_for_what_at_least_every_minute():
    lines: list[str] = []
    verifier(ReplayedApi(RECORDING["exchanges"]), report=lines.append).run()
    assert lines[:2] == [f"pool {pool}: pod gpu-{pool}-a1b2c3 waiting for a node (a pool at zero nodes scales up "
                         f"first: minutes) (0s of at most 1800s)" for pool in ("l4", "a10g-x4")]
    assert "pool l4: pod gpu-l4-a1b2c3 on node ip-10-20-3-17.ec2.internal, waiting for it to finish (10s of at most " \
           "1800s)" in lines
    assert lines[-1] == "checking the platform's alert rules in Prometheus"
    # A pool that never gets a node: the same news again every minute until the timeout.
    pending = next(e for e in RECORDING["exchanges"] if e["method"] == "GET" and e["path"].endswith("gpu-l4-a1b2c3"))
    outputs = RECORDING["outputs"] | {"gpuPools": RECORDING["outputs"]["gpuPools"][:1]}
    exchanges = [e for e in RECORDING["exchanges"] if e["method"] in ("POST", "DELETE") and "a10g" not in json.dumps(e)]
    lines.clear()
    exchanges += [pending] * 20 + [e for e in RECORDING["exchanges"] if e["path"].endswith("/rules")]
    verifier(ReplayedApi(exchanges), outputs, timeout=150, report=lines.append).run()
    assert [line.rsplit("(", 1)[1] for line in lines[:-1]] == [
        "0s of at most 150s)", "60s of at most 150s)", "120s of at most 150s)"]


def test_without_the_pulumi_cli_it_says_so_without_a_traceback(tmp_path):
    import subprocess
    import sys

    from synth import PROJECT_DIR

    result = subprocess.run([sys.executable, "-m", "verify", "dev"], cwd=PROJECT_DIR, capture_output=True,
                            text=True, env={"PATH": str(tmp_path), "HOME": str(tmp_path)}, check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: make verify reads the stack's outputs (its kubeconfig, GPU pools) with "
                                    "the Pulumi CLI, which is not on PATH: install it"), result.stderr


# ---- robustness: a namespace still terminating, an API that does not answer, a cleanup that fails too ---------


def test_a_rerun_waits_for_the_previous_runs_namespace_to_terminate_before_creating_it_anew():
    """The previous run's cleanup deletes the namespace; until it is gone the API refuses new pods in it (403),
    so reusing it as if left by an interrupted run failed every pool."""
    exchanges = copy.deepcopy(RECORDING["exchanges"])
    create = next(e for e in exchanges if e["method"] == "POST" and e["path"] == "/api/v1/namespaces")
    terminating = {"method": "GET", "path": "/api/v1/namespaces/mlplatform-verify", "status": 200,
                   "body": {"kind": "Namespace", "metadata": {"name": "mlplatform-verify"},
                            "status": {"phase": "Terminating"}}}
    gone = terminating | {"status": 404, "body": "namespaces \"mlplatform-verify\" not found"}
    exists = create | {"status": 409, "body": "namespaces \"mlplatform-verify\" already exists"}
    index = exchanges.index(create)
    exchanges[index:index] = [exists, terminating, exists, terminating, exists, gone]
    api = ReplayedApi(exchanges)
    lines: list[str] = []
    results, _ = verifier(api, report=lines.append).run()
    assert all(r.ok for r in results)
    assert api.calls[:7] == [("POST", "/api/v1/namespaces"), ("GET", "/api/v1/namespaces/mlplatform-verify")] * 3 + [
        ("POST", "/api/v1/namespaces")]
    assert lines[0] == "namespace mlplatform-verify is terminating (a previous run's cleanup): waiting for it to go"
    # A namespace that never finishes terminating ends the run, naming it, before any pod is created.
    api = ReplayedApi([exists] * 10 + [terminating])
    with pytest.raises(ApiError, match="namespace mlplatform-verify is still terminating after 30s"):
        verifier(api, namespace_timeout=30).run()
    assert ("POST", "/api/v1/namespaces/mlplatform-verify/pods") not in api.calls


def test_a_namespace_left_by_an_interrupted_run_is_reused():
    exchanges = copy.deepcopy(RECORDING["exchanges"])
    create = next(e for e in exchanges if e["method"] == "POST" and e["path"] == "/api/v1/namespaces")
    create.update(status=409, body="already exists")
    exchanges.insert(exchanges.index(create) + 1, {
        "method": "GET", "path": "/api/v1/namespaces/mlplatform-verify", "status": 200,
        "body": {"kind": "Namespace", "metadata": {"name": "mlplatform-verify"}, "status": {"phase": "Active"}}})
    results, _ = verifier(ReplayedApi(exchanges)).run()
    assert all(r.ok for r in results)


def test_a_failing_cleanup_does_not_hide_why_the_run_failed():
    exchanges = exchanges_with(lambda ex: ex.insert(3, {"method": "GET", "path": ex[3]["path"], "status": 403,
                                                        "body": "pods is forbidden"}))
    for exchange in exchanges:
        if exchange["method"] == "DELETE":
            exchange.update(status=500, body="etcdserver: request timed out")
    lines: list[str] = []
    with pytest.raises(ApiError, match="pods is forbidden"):
        verifier(ReplayedApi(exchanges), report=lines.append).run()
    assert lines[-1].startswith("cleanup failed too (HTTP 500: etcdserver: request timed out): delete what is left "
                                "with `kubectl delete namespace mlplatform-verify`")


def test_an_api_that_refuses_resets_or_never_answers_is_one_line_not_a_traceback(tmp_path):
    import socket
    import struct
    import subprocess

    from synth import PROJECT_DIR
    from verify.api import Unreachable

    def api(server: str, user: dict[str, Any] | None = None) -> HttpApi:
        return HttpApi({"current-context": "c", "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                        "clusters": [{"name": "c", "cluster": {"server": server}}],
                        "users": [{"name": "u", "user": user or {"token": "t"}}]})

    with socket.socket() as closed:  # nothing listens: connection refused
        closed.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{closed.getsockname()[1]}"
    with pytest.raises(Unreachable, match=rf"GET {refused}/api/v1/nodes: .*[Cc]onnection refused"):
        api(refused).request("GET", "/api/v1/nodes")

    class Reset(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            # Linger 0: closing sends a TCP reset before any response.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class names it)
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Reset)
    server.handle_error = lambda request, client_address: None  # the handler's own writes to the reset socket
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(Unreachable, match=rf"GET http://127.0.0.1:{server.server_port}/api/v1/nodes: "):
            api(f"http://127.0.0.1:{server.server_port}").request("GET", "/api/v1/nodes")
    finally:
        server.shutdown()
    # No credentials to ask with: a credential plugin missing from PATH.
    plugin = {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": "no-such-aws-cli"}}
    with pytest.raises(Unreachable, match="credential plugin 'no-such-aws-cli' is not on PATH"):
        api(refused, plugin).request("GET", "/api/v1/nodes")

    # make verify itself: one line, no traceback (a stand-in `pulumi` prints outputs naming the closed port).
    kubeconfig = yaml.safe_dump({"current-context": "c", "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                                 "clusters": [{"name": "c", "cluster": {"server": refused}}],
                                 "users": [{"name": "u", "user": {"token": "t"}}]})
    outputs = json.dumps(RECORDING["outputs"] | {"kubeconfig": kubeconfig})
    (tmp_path / "pulumi").write_text(f"#!{sys.executable}\nimport sys\nsys.stdout.write({outputs!r})\n")
    (tmp_path / "pulumi").chmod(0o755)
    result = subprocess.run([sys.executable, "-m", "verify", "dev"], cwd=PROJECT_DIR, capture_output=True, text=True,
                            env={"PATH": str(tmp_path), "HOME": str(tmp_path)}, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines()[-1].startswith(f"error: the Kubernetes API of dev did not answer: POST {refused}"
                                                     "/api/v1/namespaces: "), result.stderr


def test_the_destroys_volume_wait_says_an_unreachable_api_in_one_line():
    import socket
    import subprocess

    from synth import PROJECT_DIR
    from verify.released import KUBECONFIG_ENV

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{closed.getsockname()[1]}"
    kubeconfig = yaml.safe_dump({"current-context": "c", "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                                 "clusters": [{"name": "c", "cluster": {"server": refused}}],
                                 "users": [{"name": "u", "user": {"token": "t"}}]})
    result = subprocess.run([sys.executable, "-m", "verify.released"], cwd=PROJECT_DIR, capture_output=True, text=True,
                            env={KUBECONFIG_ENV: kubeconfig, "PATH": ""}, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: the cluster's volumes could not be listed, so no disk is known to be "
                                    f"deleted: GET {refused}/api/v1/persistentvolumes"), result.stderr
