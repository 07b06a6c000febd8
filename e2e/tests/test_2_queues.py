"""The real Kueue (the chart's controller, run by the harness) queues, admits, lends and reclaims the teams'
GPUs on the fake nodes of each pool, as docs/queues.md says.

The e2e stack's a100 pool is 2 nodes of 4 GPUs: research is guaranteed 4 (ceiling 6), inference 2 and vision 2
(both lent while idle); t4 is 2 nodes of one GPU time-sliced into 4 `nvidia.com/gpu.shared`, 4 guaranteed to
inference and 4 held by the root Cohort `mlplatform`, which every team borrows.
kwok marks bound pods Running and they stay so (holding their quota) until deleted. Each test deletes what it
made, except the last, which leaves one admitted job for test_9's destroy (issue 23).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from core.outputs import PlatformOutputs, PoolOutput
from core.vocabulary import (CPU_POOL, DEFAULT_LOCAL_QUEUE, GPU_RESOURCE, JOBSET_NAMESPACE, KUEUE_NAMESPACE,
                             POOL_LABEL, SHARED_GPU_RESOURCE, SHARED_GPU_TAINT, SYSTEM_POOL, SYSTEM_TAINT, TEAM_LABEL)
from e2e.cluster import ApiError, LoopbackCluster, has_condition
from e2e.lifecycle import Platform

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
KUEUE = "/apis/kueue.x-k8s.io/v1beta2"
ADMIT_SECONDS = 60.0  # Kueue admits within a scheduling cycle or two; a minute is a failure, not slowness
# Vision's namespaces come from its own stack, which runs after this file: a stand-in namespace of the vision
# team (its label is what vision's ClusterQueue selects) lets vision hold its guaranteed A100s here.
VISION_STAND_IN = "vision-queues-e2e"
_names = itertools.count()


@pytest.fixture(scope="module")
def pools(e2e: Platform) -> dict[str, PoolOutput]:
    return {pool.name: pool for pool in PlatformOutputs.read(e2e.pulumi.outputs()).gpu_pools}


def job(namespace: str, gpus: int, *, resource: str = GPU_RESOURCE, queue: str | None = None,
        priority: str = "ml-training", extra: Mapping[str, str] | None = None,
        pod: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A Job of one pod asking for `gpus` of `resource` (and `extra` resources), restricted-compliant (inference's
    namespace enforces it), queued to `queue` (the team's own by default; "" for none); `pod` adds pod-spec
    fields."""
    name = f"q{next(_names)}-{gpus}gpu"
    labels = {PRIORITY_LABEL: priority}
    queue = namespace if queue is None else queue
    if queue:
        labels[QUEUE_LABEL] = queue
    amounts = {"cpu": "1", "memory": "1Gi", resource: str(gpus), **(extra or {})}
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"suspend": True, "backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "priorityClassName": priority,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "train", "image": "nvcr.io/nvidia/pytorch:25.01-py3", "command": ["python", "train.py"],
                "resources": {"requests": amounts, "limits": amounts},
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            }], **(pod or {})}}},
    }


def submit(cluster: LoopbackCluster, manifest: dict[str, Any]) -> dict[str, Any]:
    return cluster.create(manifest)


def workload(cluster: LoopbackCluster, job_obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """The Workload Kueue made for a Job (owned by it), once there is one."""
    namespace, uid = job_obj["metadata"]["namespace"], job_obj["metadata"]["uid"]
    for wl in cluster.get(f"{KUEUE}/namespaces/{namespace}/workloads")["items"]:
        if any(o.get("uid") == uid for o in wl["metadata"].get("ownerReferences", [])):
            return wl
    return None


def admitted(cluster: LoopbackCluster, job_obj: Mapping[str, Any], timeout: float = ADMIT_SECONDS) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        wl = workload(cluster, job_obj)
        return wl if wl and has_condition(wl, "Admitted") else None
    return cluster.wait(f"Job {job_obj['metadata']['name']} admitted", probe, timeout)


def flavor_of(wl: Mapping[str, Any], resource: str) -> str:
    (pod_set,) = wl["status"]["admission"]["podSetAssignments"]
    return pod_set["flavors"][resource]


def running_pod(cluster: LoopbackCluster, job_obj: Mapping[str, Any]) -> dict[str, Any]:
    """The Job's pod once it is bound to a node and Running (kwok runs it)."""
    namespace, name = job_obj["metadata"]["namespace"], job_obj["metadata"]["name"]

    def probe() -> dict[str, Any] | None:
        pods = cluster.get(f"/api/v1/namespaces/{namespace}/pods?labelSelector=batch.kubernetes.io/job-name%3D{name}")
        return next((p for p in pods["items"] if p["spec"].get("nodeName") and p["status"].get("phase") == "Running"),
                    None)
    return cluster.wait(f"the pod of Job {name} running on a node", probe, ADMIT_SECONDS)


def node_labels(cluster: LoopbackCluster, pod: Mapping[str, Any]) -> dict[str, str]:
    return cluster.get(f"/api/v1/nodes/{pod['spec']['nodeName']}")["metadata"]["labels"]


def on_pool(labels: Mapping[str, str], pool: PoolOutput) -> bool:
    return all(labels.get(key) == value for key, value in pool.labels.items())


def job_pods(cluster: LoopbackCluster, job_obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    namespace, name = job_obj["metadata"]["namespace"], job_obj["metadata"]["name"]
    return cluster.get(f"/api/v1/namespaces/{namespace}/pods?labelSelector=batch.kubernetes.io/job-name%3D{name}")[
        "items"]


def remove(cluster: LoopbackCluster, *objects: Mapping[str, Any],
           pods_of: Callable[[LoopbackCluster, Mapping[str, Any]], list[dict[str, Any]]] = job_pods) -> None:
    """Delete Jobs (or JobSets, whose pods `pods_of` finds) and wait until they, their pods and their Workloads
    are gone, so that no quota outlives the test."""
    for obj in objects:
        try:
            cluster.request("DELETE", cluster.path_of(obj), {"propagationPolicy": "Foreground"})
        except ApiError as exc:
            if exc.status != 404:
                raise
    for obj in objects:
        def gone(obj: Mapping[str, Any] = obj) -> bool:
            try:
                cluster.get(cluster.path_of(obj))
                return False
            except ApiError as exc:
                if exc.status != 404:
                    raise
            return not pods_of(cluster, obj) and workload(cluster, obj) is None
        cluster.wait(f"{obj['kind']} {obj['metadata']['name']}, its pods and Workload deleted", gone, ADMIT_SECONDS)


@pytest.fixture
def jobs(e2e: Platform) -> Iterator[list[dict[str, Any]]]:
    """Jobs a test submits (append the created object): deleted after it, whatever happened."""
    made: list[dict[str, Any]] = []
    yield made
    remove(e2e.cluster, *made)


def decision(cluster: LoopbackCluster, job_obj: Mapping[str, Any]) -> dict[str, Any]:
    """The Job's Workload once Kueue decided: admitted, or evaluated and left pending (QuotaReserved False, with
    Kueue's reason in its message)."""
    def probe() -> dict[str, Any] | None:
        wl = workload(cluster, job_obj)
        if wl and (has_condition(wl, "Admitted") or has_condition(wl, "QuotaReserved", "False")):
            return wl
        return None
    return cluster.wait(f"Kueue's decision on Job {job_obj['metadata']['name']}", probe, ADMIT_SECONDS)


def pending_because(wl: Mapping[str, Any]) -> str:
    assert not has_condition(wl, "Admitted"), wl["status"].get("admission")
    return next(c["message"] for c in wl["status"]["conditions"] if c["type"] == "QuotaReserved")


def cluster_queue_usage(cluster: LoopbackCluster, name: str, flavor: str, resource: str) -> tuple[int, int]:
    """(total, borrowed) of a ClusterQueue's admitted usage of one resource in one flavor."""
    status = cluster.get(f"{KUEUE}/clusterqueues/{name}").get("status") or {}
    for used in status.get("flavorsUsage") or []:
        if used["name"] == flavor:
            for res in used["resources"]:
                if res["name"] == resource:
                    return int(res.get("total", 0)), int(res.get("borrowed", 0))
    return 0, 0


def test_a_research_gpu_job_is_admitted_and_runs_on_its_pool(e2e: Platform, pools, jobs):
    cluster = e2e.cluster
    created = submit(cluster, job("research", 2))
    jobs.append(created)
    wl = admitted(cluster, created)
    assert wl["status"]["admission"]["clusterQueue"] == "research"
    assert flavor_of(wl, GPU_RESOURCE) == "a100"
    # Kueue injected the flavor's node label and toleration; the scheduler bound the pod to an a100 node.
    pod = running_pod(cluster, created)
    assert on_pool(node_labels(cluster, pod), pools["a100"]), pod["spec"]["nodeName"]


def test_a_teams_cpu_job_runs_on_the_cpu_pool_never_beside_the_platforms_controllers(e2e: Platform, jobs):
    # Issue 24: the system pool had no taint, so teams' CPU pods landed on it. Kueue's default flavor has no node
    # labels: the scheduler alone keeps the pod off the tainted system node.
    cluster = e2e.cluster
    cpu_only = job("research", 0)
    for amounts in cpu_only["spec"]["template"]["spec"]["containers"][0]["resources"].values():
        amounts.pop(GPU_RESOURCE, None)  # requests and limits may be one dict
    created = submit(cluster, cpu_only)
    jobs.append(created)
    assert flavor_of(admitted(cluster, created), "cpu") == "default"
    assert node_labels(cluster, running_pod(cluster, created))[POOL_LABEL] == CPU_POOL


def test_every_platform_pod_runs_on_the_tainted_system_node(e2e: Platform):
    # Each platform chart's pods tolerate the system pool's taint and select it; a pod that did not tolerate it
    # would be on cpu-0 or Pending. GPU agents (DaemonSets on GPU nodes) are the platform's too, and elsewhere.
    cluster = e2e.cluster
    system = {n["metadata"]["name"] for n in cluster.get("/api/v1/nodes")["items"]
              if n["metadata"]["labels"].get(POOL_LABEL) == SYSTEM_POOL}
    assert any(t["key"] == SYSTEM_TAINT.key for n in cluster.get("/api/v1/nodes")["items"]
               if n["metadata"]["name"] in system for t in n["spec"].get("taints", []))
    placed = {}
    monitoring = PlatformOutputs.read(e2e.pulumi.outputs()).monitoring_namespace
    for namespace in (monitoring, KUEUE_NAMESPACE, JOBSET_NAMESPACE):
        for pod in cluster.get(f"/api/v1/namespaces/{namespace}/pods")["items"]:
            owners = pod["metadata"].get("ownerReferences") or [{}]
            if owners[0].get("kind") != "DaemonSet":
                placed[f"{namespace}/{pod['metadata']['name']}"] = pod["spec"].get("nodeName")
    assert placed and all(node in system for node in placed.values()), placed


@pytest.fixture
def vision_stand_in(e2e: Platform) -> Iterator[str]:
    cluster = e2e.cluster
    cluster.create({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": VISION_STAND_IN, "labels": {TEAM_LABEL: "vision"}}})
    cluster.create({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
                    "metadata": {"name": "vision", "namespace": VISION_STAND_IN},
                    "spec": {"clusterQueue": "vision"}})
    yield VISION_STAND_IN
    cluster.request("DELETE", f"/api/v1/namespaces/{VISION_STAND_IN}")

    def gone() -> bool:
        try:
            cluster.get(f"/api/v1/namespaces/{VISION_STAND_IN}")
            return False
        except ApiError as exc:
            return exc.status == 404
    cluster.wait(f"namespace {VISION_STAND_IN} deleted", gone, ADMIT_SECONDS)


def test_research_borrows_idle_a100s_and_inference_reclaims_its_guarantee(e2e: Platform, pools, vision_stand_in,
                                                                          jobs):
    # (jobs after vision_stand_in: the Jobs are deleted first, then the namespace)
    cluster = e2e.cluster
    # Research fills its guarantee (one whole node), then borrows 2 more with best-effort work.
    guaranteed = submit(cluster, job("research", 4, priority="ml-training"))
    jobs.append(guaranteed)
    admitted(cluster, guaranteed)
    running_pod(cluster, guaranteed)
    borrowing = submit(cluster, job("research", 2, priority="ml-training-preemptible"))
    jobs.append(borrowing)
    assert flavor_of(admitted(cluster, borrowing), GPU_RESOURCE) == "a100"
    assert on_pool(node_labels(cluster, running_pod(cluster, borrowing)), pools["a100"])
    # Kueue writes the ClusterQueue's usage a moment after it admits.
    cluster.wait("research using 6 A100s, 2 of them borrowed", lambda: cluster_queue_usage(
        cluster, "research", "a100", GPU_RESOURCE) == (6, 2), ADMIT_SECONDS)

    # Vision runs its two: the cohort's 8 A100s are all in use.
    vision = submit(cluster, job(vision_stand_in, 2, queue="vision"))
    jobs.append(vision)
    admitted(cluster, vision)
    running_pod(cluster, vision)

    # Inference wants its 2 guaranteed A100s back, at the lowest priority: reclaimWithinCohort Any evicts the
    # borrower whatever the priorities.
    reclaiming = submit(cluster, job("inference", 2, priority="ml-training-preemptible"))
    jobs.append(reclaiming)
    wl = admitted(cluster, reclaiming)
    assert flavor_of(wl, GPU_RESOURCE) == "a100" and wl["status"]["admission"]["clusterQueue"] == "inference"
    assert on_pool(node_labels(cluster, running_pod(cluster, reclaiming)), pools["a100"])

    evicted = workload(cluster, borrowing)
    assert evicted is not None
    preempted = [c for c in evicted["status"]["conditions"] if c["type"] == "Preempted"]
    assert preempted and preempted[0]["reason"] == "InCohortReclamation", evicted["status"]["conditions"]
    assert not has_condition(evicted, "Admitted")
    # Its Job is suspended again (queued to run when GPUs are idle); research's guarantee kept running.
    cluster.wait("the reclaimed Job suspended again",
                 lambda: cluster.get(cluster.path_of(borrowing))["spec"].get("suspend") is True, ADMIT_SECONDS)
    assert has_condition(workload(cluster, guaranteed) or {}, "Admitted")
    cluster.wait("research back within its guarantee (4 A100s, none borrowed)", lambda: cluster_queue_usage(
        cluster, "research", "a100", GPU_RESOURCE) == (4, 0), ADMIT_SECONDS)


def test_a_job_without_a_queue_name_goes_through_the_default_queue(e2e: Platform, pools, jobs):
    # docs/queues.md: "Kueue gives any job that names no queue" the namespace's `default` LocalQueue; it is suspended
    # until that queue admits it, and then runs like any other (held only while there is no quota for it).
    cluster = e2e.cluster
    created = submit(cluster, job("research", 1, queue=""))
    jobs.append(created)
    assert created["metadata"]["labels"].get(QUEUE_LABEL) == DEFAULT_LOCAL_QUEUE
    assert created["spec"]["suspend"] is True
    wl = admitted(cluster, created)
    assert wl["spec"]["queueName"] == DEFAULT_LOCAL_QUEUE
    assert wl["status"]["admission"]["clusterQueue"] == "research"
    assert on_pool(node_labels(cluster, running_pod(cluster, created)), pools["a100"])


def test_a_multi_gpu_job_is_placed_on_whole_gpus_never_on_time_sliced_shares(e2e: Platform, pools, jobs):
    # Inference's guaranteed pool listed first is t4 (4 shares); 2 whole GPUs must still go to a100.
    cluster = e2e.cluster
    created = submit(cluster, job("inference", 2))
    jobs.append(created)
    assert flavor_of(admitted(cluster, created), GPU_RESOURCE) == "a100"
    labels = node_labels(cluster, running_pod(cluster, created))
    assert on_pool(labels, pools["a100"]) and not on_pool(labels, pools["t4"])


def test_one_time_sliced_share_runs_on_t4(e2e: Platform, pools, jobs):
    cluster = e2e.cluster
    created = submit(cluster, job("inference", 1, resource=SHARED_GPU_RESOURCE))
    jobs.append(created)
    assert flavor_of(admitted(cluster, created), SHARED_GPU_RESOURCE) == "t4"
    assert on_pool(node_labels(cluster, running_pod(cluster, created)), pools["t4"])


def test_a_job_of_two_time_sliced_shares_is_never_placed_on_t4(e2e: Platform, pools, jobs):
    # The t4 device plugin refuses more than one share per container (failRequestsGreaterThanOne): a pod bound
    # there with 2 would fail at the kubelet. It must be refused before, never admitted onto t4.
    cluster = e2e.cluster
    try:
        created = submit(cluster, job("inference", 2, resource=SHARED_GPU_RESOURCE))
    except ApiError as exc:
        assert exc.status in (400, 403, 422), exc
        return
    jobs.append(created)

    wl = decision(cluster, created)
    assert not has_condition(wl, "Admitted"), f"admitted onto {flavor_of(wl, SHARED_GPU_RESOURCE)}"


def test_a_pod_that_opts_in_gets_one_share_of_the_time_sliced_l4(e2e: Platform, pools, jobs):
    # l4's shares are plain nvidia.com/gpu; its flavor carries SHARED_GPU_TAINT, which this pod tolerates. No
    # team is guaranteed l4: research borrows the share from the root Cohort.
    cluster = e2e.cluster
    created = submit(cluster, job("research", 1, pod={"nodeSelector": {POOL_LABEL: "l4"},
                                                      "tolerations": [SHARED_GPU_TAINT.toleration()]}))
    jobs.append(created)
    assert flavor_of(admitted(cluster, created), GPU_RESOURCE) == "l4"
    assert on_pool(node_labels(cluster, running_pod(cluster, created)), pools["l4"])


def test_a_two_gpu_job_waits_for_whole_gpus_rather_than_take_time_sliced_l4(e2e: Platform, vision_stand_in,
                                                                            jobs):
    # Issue 24's blocker: with the A100s all in use, Kueue went on to the next flavor that fits; l4's 2 shares
    # would, and its device plugin (failRequestsGreaterThanOne) would then fail the pod. Now the job waits.
    cluster = e2e.cluster
    for namespace, gpus, queue in (("research", 4, None), ("inference", 2, None), (vision_stand_in, 2, "vision")):
        created = submit(cluster, job(namespace, gpus, queue=queue))
        jobs.append(created)
        assert flavor_of(admitted(cluster, created), GPU_RESOURCE) == "a100"
    waiting = submit(cluster, job("research", 2))
    jobs.append(waiting)
    reason = pending_because(decision(cluster, waiting))
    # (Kueue prints the taint as a Go struct, its key inside.)
    assert "untolerated taint" in reason and SHARED_GPU_TAINT.key in reason and "in flavor l4" in reason, reason


def test_a_team_borrows_gpus_no_team_is_guaranteed_through_the_root_cohort(e2e: Platform, pools, jobs):
    # Issue 24: t4's 4 unguaranteed shares could never be admitted. Inference fills its 4 guaranteed shares, so
    # that nothing of a team is left to lend: research's share can only come from the root Cohort.
    cluster = e2e.cluster
    for _ in range(4):
        jobs.append(submit(cluster, job("inference", 1, resource=SHARED_GPU_RESOURCE)))
    for created in jobs:
        assert flavor_of(admitted(cluster, created), SHARED_GPU_RESOURCE) == "t4"
    borrowing = submit(cluster, job("research", 1, resource=SHARED_GPU_RESOURCE))
    jobs.append(borrowing)
    assert flavor_of(admitted(cluster, borrowing), SHARED_GPU_RESOURCE) == "t4"
    assert on_pool(node_labels(cluster, running_pod(cluster, borrowing)), pools["t4"])
    cluster.wait("research borrowing 1 t4 share", lambda: cluster_queue_usage(
        cluster, "research", "t4", SHARED_GPU_RESOURCE) == (1, 1), ADMIT_SECONDS)
    assert cluster.get(f"{KUEUE}/cohorts/platform")["spec"]["parentName"] == "mlplatform"


def test_the_gpu_ceiling_holds_over_whole_gpus_and_shares_together(e2e: Platform, jobs):
    # Issue 24: research's ceiling is 6 GPUs. Its 4 guaranteed A100s and 2 borrowed t4 shares reach it, so one
    # more A100 is not admitted, though a100 alone would let it borrow 2 of inference's idle ones (and its
    # ResourceQuota, a limit per resource, would hold 5 A100s beside 2 shares).
    cluster = e2e.cluster
    for gpus, resource in ((4, GPU_RESOURCE), (1, SHARED_GPU_RESOURCE), (1, SHARED_GPU_RESOURCE)):
        created = submit(cluster, job("research", gpus, resource=resource))
        jobs.append(created)
        admitted(cluster, created)
    over = submit(cluster, job("research", 1))
    jobs.append(over)
    assert "mlplatform.io/gpu-units" in pending_because(decision(cluster, over))


def test_cpu_beyond_the_teams_quota_is_never_admitted(e2e: Platform, jobs):
    # Issue 24: Kueue let research borrow inference's idle CPU, while research's ResourceQuota (32 CPUs) refuses
    # the pod: the job held its GPU until waitForPodsReady evicted it, and was admitted again, in a loop.
    cluster = e2e.cluster
    created = submit(cluster, job("research", 1, extra={"cpu": "40"}))
    jobs.append(created)
    assert "cpu" in pending_because(decision(cluster, created))


@pytest.mark.parametrize("extra", [{"vpc.amazonaws.com/efa": "1"}, {"ephemeral-storage": "10Gi"},
                                   {"hugepages-2Mi": "64Mi"}], ids=["efa", "ephemeral-storage", "hugepages"])
def test_a_job_asking_for_a_resource_no_queue_covers_is_admitted(e2e: Platform, jobs, extra):
    # Kueue 0.19 (BlockUndeclared) refuses a workload asking for a resource no ClusterQueue covers; the platform
    # excludes the node-level ones from quota (issue 22/24). A pod asking for EFA has no node here: only its
    # admission is asserted.
    cluster = e2e.cluster
    created = submit(cluster, job("research", 1, extra=extra))
    jobs.append(created)
    assert flavor_of(admitted(cluster, created), GPU_RESOURCE) == "a100"


def test_zz_one_admitted_job_is_left_running_for_destroy(e2e: Platform, pools):
    # Issue 23: destroy must end clean even when Kueue has admitted work (its finalizers on the Workload,
    # ClusterQueue and ResourceFlavors); test_9 proves it with this job still running.
    cluster = e2e.cluster
    created = submit(cluster, job("research", 1))
    assert admitted(cluster, created)["status"]["admission"]["clusterQueue"] == "research"
    assert on_pool(node_labels(cluster, running_pod(cluster, created)), pools["a100"])
