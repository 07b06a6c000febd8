"""The real Kueue admits a multi-node JobSet as a gang by topology (README, multi-node training): its pods all at
once, on whole nodes of one block; a gang that fits no block waits without holding quota.

The e2e stack's h100 pool is 4 nodes of 8 GPUs, labelled two to a block (e2e/lifecycle.py topology_labels),
dedicated to team training (32 GPUs guaranteed). The gangs are JobSets of one replicated Job whose indexed pods
each take a whole node (torchrun's shape: the completion index is the node rank), run end to end by the real
controllers: Kueue suspends and admits the JobSet, the JobSet controller (the chart's, run by e2e/cluster.py)
makes and resumes its Job, the Job controller makes the pods, and Kueue's topology assignment places them.
"""

from __future__ import annotations

import copy
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from components.gang_admission import JOBSET_GROUP, JOBSET_QUEUE_POLICY, JOBSET_VERSION
from core.outputs import PlatformOutputs, PoolOutput
from core.vocabulary import GPU_RESOURCE, POOL_LABEL, REQUIRED_TOPOLOGY
from e2e.cluster import LoopbackCluster, has_condition
from e2e.lifecycle import Platform
from e2e.tests.test_2_queues import (ADMIT_SECONDS, QUEUE_LABEL, admitted, cluster_queue_usage, job, remove,
                                     workload)

TEAM = "training"
POOL = "h100"
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"  # on every Job and pod the JobSet controller makes
REPLICATED_JOB = "workers"


@pytest.fixture(scope="module")
def h100(e2e: Platform) -> tuple[PoolOutput, str]:
    """The multi-node pool, and its Topology's block level."""
    outputs = PlatformOutputs.read(e2e.pulumi.outputs())
    (pool,) = [p for p in outputs.gpu_pools if p.name == POOL and p.multi_node]
    return pool, outputs.topology_levels[0]


def gang(pods: int, level: str, gpus_per_node: int, *, queue: str = TEAM) -> dict[str, Any]:
    """A JobSet of one replicated Job of `pods` indexed pods started together, each asking for a whole node of
    the pool, all required within one domain of `level`: the shape docs/multi-node.md asks of multi-node work."""
    single = job(TEAM, gpus_per_node, queue=queue)  # its labels (queue, priority) and its pod template
    template = single["spec"]["template"]
    template["metadata"] = {"annotations": {REQUIRED_TOPOLOGY: level}}
    template["spec"] |= {"nodeSelector": {POOL_LABEL: POOL},
                         "tolerations": [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present",
                                          "effect": "NoSchedule"}]}
    return {
        "apiVersion": f"{JOBSET_GROUP}/{JOBSET_VERSION}", "kind": "JobSet",
        "metadata": {"name": f"gang-{pods}x{gpus_per_node}-{time.monotonic_ns() % 100000}", "namespace": TEAM,
                     "labels": single["metadata"]["labels"]},
        "spec": {"replicatedJobs": [{"name": REPLICATED_JOB, "replicas": 1, "template": {"spec": {
            "completionMode": "Indexed", "completions": pods, "parallelism": pods, "backoffLimit": 0,
            "template": template}}}]},
    }


def gang_pods(cluster: LoopbackCluster, jobset: Mapping[str, Any]) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"labelSelector": f"{JOBSET_NAME_LABEL}={jobset['metadata']['name']}"})
    return cluster.get(f"/api/v1/namespaces/{TEAM}/pods?{query}")["items"]


@pytest.fixture
def gangs(e2e: Platform) -> Iterator[list[dict[str, Any]]]:
    made: list[dict[str, Any]] = []
    yield made
    remove(e2e.cluster, *made, pods_of=gang_pods)


def test_a_two_node_jobset_is_admitted_onto_two_nodes_of_one_block(e2e: Platform, h100, gangs):
    pool, block = h100
    cluster = e2e.cluster
    created = cluster.create(gang(2, block, pool.gpus_per_node))
    gangs.append(created)
    assert created["metadata"]["labels"][QUEUE_LABEL] == TEAM
    assert created["spec"]["suspend"] is True  # Kueue's webhook: nothing starts before the queue admits it
    wl = admitted(cluster, created)
    (pod_set,) = wl["status"]["admission"]["podSetAssignments"]
    assert pod_set["name"] == REPLICATED_JOB
    assert pod_set["flavors"][GPU_RESOURCE] == POOL and pod_set["count"] == 2
    assert pod_set.get("topologyAssignment"), pod_set  # Kueue placed it by topology, node by node

    def running() -> list[dict[str, Any]] | None:
        pods = gang_pods(cluster, created)
        up = [p for p in pods if p["spec"].get("nodeName") and p["status"].get("phase") == "Running"]
        return up if len(up) == 2 else None
    pods = cluster.wait("both pods of the JobSet running", running, ADMIT_SECONDS)
    # The JobSet controller made its Job, the Job controller the pods: none of them by this test.
    (owner,) = {ref["name"] for p in pods for ref in p["metadata"]["ownerReferences"] if ref.get("controller")}
    child = cluster.get(f"/apis/batch/v1/namespaces/{TEAM}/jobs/{owner}")
    assert [(r["kind"], r["name"]) for r in child["metadata"]["ownerReferences"]] == [
        ("JobSet", created["metadata"]["name"])]
    assert cluster.get(cluster.path_of(created))["spec"]["suspend"] is False
    nodes = [cluster.get(f"/api/v1/nodes/{p['spec']['nodeName']}")["metadata"]["labels"] for p in pods]
    assert len({n["kubernetes.io/hostname"] for n in nodes}) == 2, "two nodes, one pod each"
    assert all(n.get(POOL_LABEL) == POOL for n in nodes)
    assert len({n[block] for n in nodes}) == 1, f"one block: {[n[block] for n in nodes]}"
    cluster.wait("training using 16 H100s", lambda: cluster_queue_usage(
        cluster, TEAM, POOL, GPU_RESOURCE) == (16, 0), ADMIT_SECONDS)


def test_a_jobset_that_fits_no_block_waits_without_holding_quota(e2e: Platform, h100, gangs):
    # Three whole nodes required in one block of two: within the team's 32 GPUs and the pool's 4 nodes, but no
    # block holds it, so Kueue reserves nothing and the JobSet stays suspended, while a gang that fits still runs.
    pool, block = h100
    cluster = e2e.cluster
    too_big = cluster.create(gang(3, block, pool.gpus_per_node))
    gangs.append(too_big)

    def pending() -> dict[str, Any] | None:
        wl = workload(cluster, too_big)
        return wl if wl and has_condition(wl, "QuotaReserved", "False") else None
    wl = cluster.wait("Kueue's verdict on the three-node JobSet", pending, ADMIT_SECONDS)
    assert not has_condition(wl, "Admitted")
    reserved = next(c for c in wl["status"]["conditions"] if c["type"] == "QuotaReserved")
    assert "topology" in reserved["message"].lower() or "fit" in reserved["message"].lower(), reserved
    assert cluster.get(cluster.path_of(too_big))["spec"]["suspend"] is True
    assert gang_pods(cluster, too_big) == []
    # (Kueue writes the usage a moment after the last test's gang is gone.)
    cluster.wait("training holding no H100s", lambda: cluster_queue_usage(
        cluster, TEAM, POOL, GPU_RESOURCE) == (0, 0), ADMIT_SECONDS)
    # Still nothing reserved for it while a two-node gang is admitted beside it.
    fits = cluster.create(gang(2, block, pool.gpus_per_node))
    gangs.append(fits)
    admitted(cluster, fits)
    cluster.wait("training using only the two-node JobSet's 16 H100s", lambda: cluster_queue_usage(
        cluster, TEAM, POOL, GPU_RESOURCE) == (16, 0), ADMIT_SECONDS)
    assert not has_condition(workload(cluster, too_big) or {}, "QuotaReserved")
    assert gang_pods(cluster, too_big) == []


def _warnings(e2e: Platform, obj: dict[str, Any]) -> list[str]:
    """The API server's warnings on a dry-run create of OBJ (the JobSet webhooks and Kueue's judge it too)."""
    path = e2e.cluster.path_of(obj, collection=True) + "?dryRun=All"
    answer, warnings = e2e.cluster.request_as("POST", path, obj, user="e2e-admin", groups=["system:masters"])
    assert answer["kind"] == obj["kind"]
    return warnings


def _without_topology(obj: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    del obj["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["metadata"]
    return obj


@pytest.mark.parametrize("change,policy,message", [
    (lambda pool, block: gang(2, block, pool.gpus_per_node // 2), "multi-node-whole-nodes",
     "Pods on a multi-node pool take whole nodes"),
    (lambda pool, block: _without_topology(gang(2, block, pool.gpus_per_node)), "multi-node-names-its-topology",
     "only by the network topology"),
    (lambda pool, block: gang(2, block, pool.gpus_per_node, queue="research"), JOBSET_QUEUE_POLICY,
     f"label it {QUEUE_LABEL}: training"),
], ids=["part-of-a-node", "no-topology", "another-teams-queue"])
def test_the_api_server_warns_of_a_jobset_that_breaks_a_multi_node_rule(e2e: Platform, h100, change, policy,
                                                                         message):
    # The e2e stack warns (dev-like; prod denies): the policy's message comes back with the (dry-run) JobSet.
    pool, block = h100
    warnings = _warnings(e2e, change(pool, block))
    assert any(f"'mlplatform-{policy}'" in w and message in w for w in warnings), warnings


def test_a_compliant_jobset_draws_no_warning(e2e: Platform, h100):
    pool, block = h100
    assert _warnings(e2e, gang(2, block, pool.gpus_per_node)) == []


def test_zz_one_admitted_jobset_is_left_running_for_destroy(e2e: Platform, h100):
    # Destroy deletes the team namespaces, and their JobSets with them, before the JobSet release: Kueue and the
    # JobSet controller update a JobSet on its way out, and its fail-closed webhooks judge every update, so they
    # must still be served then (tests/test_jobset.py). test_9 proves it with this gang still running, and that
    # no JobSet is left.
    pool, block = h100
    cluster = e2e.cluster
    created = cluster.create(gang(2, block, pool.gpus_per_node))
    admitted(cluster, created)
    cluster.wait("the JobSet's two pods running", lambda: len([
        p for p in gang_pods(cluster, created) if p["status"].get("phase") == "Running"]) == 2, ADMIT_SECONDS)
