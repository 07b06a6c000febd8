"""The real Kueue admits a multi-node job as a gang by topology (README, multi-node training): its pods all at
once, on whole nodes of one block; a gang that fits no block waits without holding quota.

The e2e stack's h100 pool is 4 nodes of 8 GPUs, labelled two to a block (e2e/lifecycle.py topology_labels),
dedicated to team training (32 GPUs guaranteed). The gangs are indexed Jobs of whole-node pods: a JobSet would
be admitted the same way (one Workload, one pod set per replicated Job), but its controller does not run here
(see the README's "make e2e" list).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from core.outputs import PlatformOutputs, PoolOutput
from core.vocabulary import GPU_RESOURCE, POOL_LABEL, REQUIRED_TOPOLOGY
from e2e.cluster import has_condition
from e2e.lifecycle import Platform
from e2e.tests.test_2_queues import (ADMIT_SECONDS, QUEUE_LABEL, admitted, cluster_queue_usage, job, remove,
                                     workload)

TEAM = "training"
POOL = "h100"


@pytest.fixture(scope="module")
def h100(e2e: Platform) -> tuple[PoolOutput, str]:
    """The multi-node pool, and its Topology's block level."""
    outputs = PlatformOutputs.read(e2e.pulumi.outputs())
    (pool,) = [p for p in outputs.gpu_pools if p.name == POOL and p.multi_node]
    return pool, outputs.topology_levels[0]


@pytest.fixture
def gangs(e2e: Platform) -> Iterator[list[dict[str, Any]]]:
    made: list[dict[str, Any]] = []
    yield made
    remove(e2e.cluster, *made)


def gang(pods: int, level: str, gpus_per_node: int) -> dict[str, Any]:
    """An indexed Job of `pods` pods started together, each asking for a whole node of the pool, all required
    within one domain of `level`: the shape the admission policies ask of multi-node work."""
    made = job(TEAM, gpus_per_node)
    made["metadata"]["name"] = f"gang-{pods}x{gpus_per_node}-{time.monotonic_ns() % 100000}"
    spec = made["spec"]
    spec |= {"completionMode": "Indexed", "completions": pods, "parallelism": pods}
    spec["template"]["metadata"] = {"annotations": {REQUIRED_TOPOLOGY: level}}
    pod = spec["template"]["spec"]
    pod["nodeSelector"] = {POOL_LABEL: POOL}
    pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present",
                           "effect": "NoSchedule"}]
    return made


def gang_pods(e2e: Platform, created: dict[str, Any]) -> list[dict[str, Any]]:
    name = created["metadata"]["name"]
    return e2e.cluster.get(f"/api/v1/namespaces/{TEAM}/pods?labelSelector=batch.kubernetes.io/job-name%3D{name}")[
        "items"]


def test_a_two_node_gang_is_admitted_onto_two_nodes_of_one_block(e2e: Platform, h100, gangs):
    pool, block = h100
    cluster = e2e.cluster
    created = cluster.create(gang(2, block, pool.gpus_per_node))
    gangs.append(created)
    assert created["metadata"]["labels"][QUEUE_LABEL] == TEAM
    wl = admitted(cluster, created)
    (pod_set,) = wl["status"]["admission"]["podSetAssignments"]
    assert pod_set["flavors"][GPU_RESOURCE] == POOL and pod_set["count"] == 2
    assert pod_set.get("topologyAssignment"), pod_set  # Kueue placed it by topology, node by node

    def running() -> list[dict[str, Any]] | None:
        pods = gang_pods(e2e, created)
        up = [p for p in pods if p["spec"].get("nodeName") and p["status"].get("phase") == "Running"]
        return up if len(up) == 2 else None
    pods = cluster.wait("both pods of the gang running", running, ADMIT_SECONDS)
    nodes = [cluster.get(f"/api/v1/nodes/{p['spec']['nodeName']}")["metadata"]["labels"] for p in pods]
    assert len({n["kubernetes.io/hostname"] for n in nodes}) == 2, "two nodes, one pod each"
    assert all(n.get(POOL_LABEL) == POOL for n in nodes)
    assert len({n[block] for n in nodes}) == 1, f"one block: {[n[block] for n in nodes]}"
    cluster.wait("training using 16 H100s", lambda: cluster_queue_usage(
        cluster, TEAM, POOL, GPU_RESOURCE) == (16, 0), ADMIT_SECONDS)


def test_a_gang_that_fits_no_block_waits_without_holding_quota(e2e: Platform, h100, gangs):
    # Three whole nodes required in one block of two: within the team's 32 GPUs and the pool's 4 nodes, but no
    # block holds it, so Kueue reserves nothing and the Job stays suspended, while a gang that fits still runs.
    pool, block = h100
    cluster = e2e.cluster
    too_big = cluster.create(gang(3, block, pool.gpus_per_node))
    gangs.append(too_big)

    def pending() -> dict[str, Any] | None:
        wl = workload(cluster, too_big)
        return wl if wl and has_condition(wl, "QuotaReserved", "False") else None
    wl = cluster.wait("Kueue's verdict on the three-node gang", pending, ADMIT_SECONDS)
    assert not has_condition(wl, "Admitted")
    reserved = next(c for c in wl["status"]["conditions"] if c["type"] == "QuotaReserved")
    assert "topology" in reserved["message"].lower() or "fit" in reserved["message"].lower(), reserved
    assert cluster.get(cluster.path_of(too_big))["spec"]["suspend"] is True
    assert gang_pods(e2e, too_big) == []
    # (Kueue writes the usage a moment after the last test's gang is gone.)
    cluster.wait("training holding no H100s", lambda: cluster_queue_usage(
        cluster, TEAM, POOL, GPU_RESOURCE) == (0, 0), ADMIT_SECONDS)
    # Still nothing reserved for it while a two-node gang is admitted beside it.
    fits = cluster.create(gang(2, block, pool.gpus_per_node))
    gangs.append(fits)
    admitted(cluster, fits)
    cluster.wait("training using only the two-node gang's 16 H100s", lambda: cluster_queue_usage(
        cluster, TEAM, POOL, GPU_RESOURCE) == (16, 0), ADMIT_SECONDS)
    assert not has_condition(workload(cluster, too_big) or {}, "QuotaReserved")


def test_the_api_server_warns_of_part_of_a_node_on_the_multi_node_pool(e2e: Platform, h100):
    # The e2e stack warns (dev-like; prod denies): the policy's message comes back with the (dry-run) Job.
    pool, block = h100
    half = gang(2, block, pool.gpus_per_node // 2)
    path = e2e.cluster.path_of(half, collection=True) + "?dryRun=All"
    _, warnings = e2e.cluster.request_as("POST", path, half, user="e2e-admin", groups=["system:masters"])
    assert any("Pods on a multi-node pool take whole nodes" in w for w in warnings), warnings
