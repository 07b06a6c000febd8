"""`make verify` against the loopback cluster, as the deploy job runs it: `python -m verify e2e` reads the stack's
outputs with the Pulumi CLI and reaches the cluster by the kubeconfig they hold. Each GPU pool's probe pod must
land on a node of that pool; what needs a pod that really runs (the GPU it sees, its metrics, the alert rules:
no Prometheus runs here) must be reported NOT APPLICABLE, never as passed."""

from __future__ import annotations

import json
import sys
from typing import Any

from core.outputs import PlatformOutputs
from e2e.cluster import ApiError
from e2e.lifecycle import PROJECT_DIR, Platform
from verify.nccl import NCCL_NAMESPACE
from verify.probe import NAMESPACE, gpu_resource
from verify.run import NCCL_NOT_RUN, NOT_APPLICABLE


def test_verify_places_a_gpu_pod_on_each_pool_and_judges_nothing_it_cannot(e2e: Platform):
    record = e2e.workdir / "verify-e2e.json"
    done = e2e.cluster.run([sys.executable, "-m", "verify", "e2e", "--timeout", "120", "--record", str(record)],
                           env=e2e.pulumi.env(), cwd=PROJECT_DIR, check=False, capture=True, timeout=300)
    (e2e.cluster.logs / "verify.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    pools = PlatformOutputs.read(e2e.pulumi.outputs()).gpu_pools
    rows = {line.split()[0]: line for line in lines[1:] if not line.startswith(("alert rules:", "NCCL"))}
    assert set(rows) == {pool.name for pool in pools}

    exchanges: list[dict[str, Any]] = json.loads(record.read_text())
    for pool in pools:
        pool_name, node, _from_zero, _scale_up, _scheduled, finished, gpu_seen, metrics, *verdict = rows[pool.name].split()
        assert (finished, gpu_seen, metrics) == ("n/a", "n/a", "n/a"), rows[pool.name]
        assert " ".join(verdict) == f"ok; finished, GPU seen, metrics: {NOT_APPLICABLE}"
        # Landed on a node of its pool, by the API server's own word: the node's labels and GPUs.
        labels = e2e.cluster.get(f"/api/v1/nodes/{node}")["metadata"]["labels"]
        assert {key: labels.get(key) for key in pool.labels} == dict(pool.labels), node
        resource = gpu_resource(pool)
        assert resource and int(e2e.cluster.get(f"/api/v1/nodes/{node}")["status"]["allocatable"][resource]) > 0
        (posted,) = [e["body"] for e in exchanges if e["method"] == "POST"
                     and e["path"] == f"/api/v1/namespaces/{NAMESPACE}/pods"
                     and e["body"]["metadata"]["labels"]["mlplatform.io/pool"] == pool_name]
        assert posted["spec"]["containers"][0]["resources"]["limits"][resource] == "1"
        pod_path = f"/api/v1/namespaces/{NAMESPACE}/pods/{posted['metadata']['name']}"
        bound = [e["body"]["spec"].get("nodeName") for e in exchanges if e["method"] == "GET" and e["path"] == pod_path]
        assert bound[-1] == node  # the scheduler's choice, as verify read it
    assert lines[-1] == f"alert rules: {NOT_APPLICABLE}: no Prometheus"
    # It never asked for a log or Prometheus: nothing there to judge.
    assert not [e["path"] for e in exchanges if e["path"].endswith("/log") or "/proxy/" in e["path"]]

    # It deletes what it made; the namespace controller really removes the namespace.
    def deleted(namespace: str) -> None:
        def gone() -> bool | None:
            try:
                e2e.cluster.get(f"/api/v1/namespaces/{namespace}")
            except ApiError as exc:
                return exc.status == 404 or None
            return None
        e2e.cluster.wait(f"namespace {namespace} deleted", gone, timeout=60)

    deleted(NAMESPACE)

    # Each multi-node pool's NCCL check: its Job's two whole-node pods land on two nodes of the pool, and with no
    # pod running here the bandwidth is said to be unmeasured, never passed or failed.
    multi_node = [pool for pool in pools if pool.multi_node]
    assert multi_node  # the e2e stack's h100
    nccl_rows = {line.split()[1]: line for line in lines if line.startswith("NCCL ") and line.split()[1] != "nodes"}
    assert set(nccl_rows) == {pool.name for pool in multi_node}
    for pool in multi_node:
        assert nccl_rows[pool.name].endswith(NCCL_NOT_RUN), nccl_rows[pool.name]
        nodes = nccl_rows[pool.name].split()[2].split(",")
        assert len(set(nodes)) == 2
        for node in nodes:
            labels = e2e.cluster.get(f"/api/v1/nodes/{node}")["metadata"]["labels"]
            assert {key: labels.get(key) for key in pool.labels} == dict(pool.labels), node
        (job,) = [e["body"] for e in exchanges if e["method"] == "POST"
                  and e["path"] == f"/apis/batch/v1/namespaces/{NCCL_NAMESPACE}/jobs"
                  and e["body"]["metadata"]["labels"]["mlplatform.io/pool"] == pool.name]
        (container,) = job["spec"]["template"]["spec"]["containers"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == str(pool.gpus_per_node)

    deleted(NCCL_NAMESPACE)
