"""`make verify`'s NCCL check: nccl-tests' output as all_reduce_perf prints it (src/common.cu at the pinned
image's v2.16.9), the floor per instance type, the objects it creates (strict schemas, the gang policies), and a
run against an API server stand-in that keeps what is created and binds pods as a scheduler would."""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest
import yaml

import versions

from core.outputs import PoolOutput
from synth.schema import check_manifests
from tests.cel import admit
from tests.test_admission import namespace as team_namespace
from tests.clouds.gke.test_fabric import fabrics  # noqa: F401 (fixture)
from tests.test_gang_admission import policies, synthesis  # noqa: F401 (fixtures)
from verify import nccl
from verify.api import ApiError
from verify.nccl import NCCL_NAMESPACE, manifests, parse
from verify.run import NCCL_NOT_RUN, Verifier, table

# What rank 0 prints on two p5.48xlarge (16 ranks), between the device list and the end, in common.cu's format:
# "%12li  %12li  %8s  %6s  %6s" then, out-of-place and in-place, "  %7s  %6.2f  %6.2f  %5g".
P5_RUN = """\
# nThread 1 nGpus 1 minBytes 1073741824 maxBytes 8589934592 step: 2(factor) warmup iters: 5 iters: 20 agg iters: 1 validation: 1 graph: 0
#
# Using devices
#  Rank  0 Group  0 Pid     52 on nccl-h100-a1b2c3-0 device  0 [0x53] NVIDIA H100 80GB HBM3
#  Rank  8 Group  0 Pid     31 on nccl-h100-a1b2c3-1 device  0 [0x53] NVIDIA H100 80GB HBM3
nccl-h100-a1b2c3-0:52:52 [0] NCCL INFO NET/OFI Selected provider is efa, fabric is efa-direct (found 32 nics)
nccl-h100-a1b2c3-0:52:52 [0] NCCL INFO Using network Libfabric
#
#                                                              out-of-place                       in-place          
#       size         count      type   redop    root     time   algbw   busbw #wrong     time   algbw   busbw #wrong
#        (B)    (elements)                               (us)  (GB/s)  (GB/s)            (us)  (GB/s)  (GB/s)       
  1073741824     268435456     float     sum      -1   5912.4  181.61  340.52      0   5900.6  181.97  341.20      0
  2147483648     536870912     float     sum      -1    11502  186.71  350.07      0    11479  187.08  350.77      0
  4294967296    1073741824     float     sum      -1    22610  189.96  356.17      0    22565  190.34  356.89      0
  8589934592    2147483648     float     sum      -1    44980  190.97  358.07      0    44890  191.36  358.79      0
# Out of bounds values : 0 OK
# Avg bus bandwidth    : 351.56 
#
# Collective test concluded: all_reduce_perf
"""
# The same two nodes after NCCL fell back to TCP sockets (no EFA in the pods).
SOCKET_RUN = P5_RUN.replace("Using network Libfabric", "Using network Socket").replace(
    "# Avg bus bandwidth    : 351.56", "# Avg bus bandwidth    : 11.204")

H100 = {"name": "h100", "accelerator": "nvidia-h100-80gb", "gpusPerNode": 8, "minNodes": 0, "maxNodes": 4,
        "labels": {"mlplatform.io/pool": "h100"}, "taints": ["nvidia.com/gpu=present:NoSchedule"],
        "multiNode": True, "fabricDevices": {"vpc.amazonaws.com/efa": 32}, "hugePages": {"hugepages-2Mi": "42240Mi"},
        "ncclEnv": {"FI_PROVIDER": "efa", "NCCL_PROTO": "simple", "FI_EFA_USE_DEVICE_RDMA": "1"}}
LEVELS = ("example.com/block", "example.com/rack", "kubernetes.io/hostname")


def test_the_output_is_read_as_nccl_tests_prints_it():
    output = parse(P5_RUN)
    assert output.avg_busbw == 351.56
    assert output.largest == (8589934592, 358.79)  # the in-place column of the largest size
    assert (output.wrong_values, output.network) == (0, "Libfabric")
    assert parse("nccl check: pod 1 not reachable by ssh after 5 minutes\n") == nccl.AllReduceOutput(None, None,
                                                                                                      None, "")


def test_floors_are_half_the_published_link_rate_with_their_source():
    assert nccl.FLOORS["p5.48xlarge"].floor_gbs == 200  # 3200 Gbps = 400 GB/s
    assert nccl.FLOORS["p4d.24xlarge"].floor_gbs == 25
    assert all(floor.source for floor in nccl.FLOORS.values())
    # GKE's: the GPU NICs' rates (Compute Engine's totals add the gVNICs), judged now that the pods use them.
    assert {t: (f.link_gbps, f.floor_gbs) for t, f in nccl.FLOORS.items() if t.startswith("a")} == {
        "a3-highgpu-8g": (800, 50), "a3-megagpu-8g": (1600, 100), "a3-ultragpu-8g": (3200, 200),
        "a4-highgpu-8g": (3200, 200)}
    assert not [t for t, f in nccl.FLOORS.items() if f.unjudged]


def test_the_objects_pass_the_strict_schemas_and_take_whole_nodes_with_the_pools_fabric():
    pool = PoolOutput.read(H100)
    objects = [nccl.namespace(), *manifests(pool, "a1b2c3", "ssh-ed25519 AAAA x", "-----BEGIN-----", LEVELS)]
    report = check_manifests(objects)
    assert not report.errors and not report.unchecked, report.errors + report.unchecked
    job = objects[-1]
    assert (job["kind"], job["spec"]["completions"], job["spec"]["parallelism"]) == ("Job", 2, 2)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"] | {"memory": "-"} == {"nvidia.com/gpu": "8",
                                                                  "vpc.amazonaws.com/efa": "32",
                                                                  "hugepages-2Mi": "42240Mi", "memory": "-"}
    assert container["image"].startswith("public.ecr.aws/hpc-cloud/nccl-tests:") and "@" not in container["image"]
    env = next(o for o in objects if o["kind"] == "ConfigMap")
    assert env["data"] == H100["ncclEnv"]
    assert container["envFrom"] == [{"configMapRef": {"name": env["metadata"]["name"]}}]
    script = container["command"][2]
    # Every variable of the pool's NCCL settings reaches the ranks mpirun starts on the other node over ssh.
    assert all(f"-x {name}" in script for name in H100["ncclEnv"])
    assert "-np 16" in script and "/opt/nccl-tests/build/all_reduce_perf -b 1G -e 8G" in script
    assert job["spec"]["template"]["spec"]["subdomain"] == next(o for o in objects if o["kind"] == "Service")[
        "metadata"]["name"]


def test_on_eks_the_pods_ask_for_the_huge_pages_their_nodes_reserve(prod):
    # From the prod stack's own output, as `make verify` reads it: the pool's hugePages, which the pods take in
    # requests and limits alike, are what the pool's EC2NodeClass userData reserves at boot (`want=<pages>`).
    import re
    (pool,) = [PoolOutput.read(p) for p in prod.outputs["gpuPools"] if p.get("multiNode")]
    (node_class,) = [r.inputs["spec"] for r in prod.resources if r.inputs.get("kind") == "EC2NodeClass"
                     and r.inputs["metadata"]["name"] == pool.name]
    reserved = int(re.search(r"^want=(\d+)$", node_class["userData"], re.MULTILINE).group(1))  # type: ignore[union-attr]
    (container,) = manifests(pool, "a1b2c3", "pub", "key", ("kubernetes.io/hostname",))[-1]["spec"]["template"][
        "spec"]["containers"]
    resources = container["resources"]
    assert resources["requests"]["hugepages-2Mi"] == resources["limits"]["hugepages-2Mi"] == f"{reserved * 2}Mi"
    assert reserved == 192 * 110  # p5.48xlarge


def test_the_pods_are_what_the_gang_policies_admit_in_a_team_namespace(policies):  # noqa: F811 (fixture)
    # The synthesis behind `policies` has the pool h100 (8 GPUs per node) and the levels LEVELS.
    job = manifests(PoolOutput.read(H100), "a1b2c3", "pub", "key", LEVELS)[-1]
    for name in ("multi-node-whole-nodes", "multi-node-names-its-topology"):
        decision = admit(policies[name], job, team_namespace("research"))
        assert decision.allowed, (name, decision.failures)


class Cluster:
    """An API server stand-in: keeps what is POSTed, binds each pod of a Job to a node of its own, and ends pod 0
    as `finish` says (None: it never ends; "Failed" fails the Job too)."""

    def __init__(self, nodes: dict[str, dict[str, str]], log: str = "", finish: str | None = "Complete") -> None:
        self.nodes = nodes
        self.log = log
        self.finish = finish
        self.objects: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        self.calls.append((method, path))
        if method == "POST":
            assert body is not None
            name = body["metadata"]["name"]
            self.objects[f"{path}/{name}"] = body
            return body
        if method == "DELETE":
            if path not in self.objects:
                raise ApiError(404, path)
            del self.objects[path]
            if path.count("/") == 4:  # a namespace: everything in it goes too
                namespace = path.rsplit("/", 1)[1]
                self.objects = {key: obj for key, obj in self.objects.items() if f"/namespaces/{namespace}/" not in key}
            return {}
        if path.startswith("/api/v1/nodes/"):
            return {"metadata": {"name": path.rsplit("/", 1)[1], "labels": self.nodes[path.rsplit("/", 1)[1]]}}
        if "/pods?" in path:
            job = path.rsplit("=", 1)[1]
            names = sorted(self.nodes)
            ended = {"Complete": ("Succeeded", 0), "Failed": ("Failed", 1)}.get(self.finish or "")
            status = ({"phase": ended[0], "containerStatuses": [{"state": {"terminated": {"exitCode": ended[1]}}}]}
                      if ended else {"phase": "Running"})
            return {"items": [{"metadata": {"name": f"{job}-{i}-x", "annotations": {
                "batch.kubernetes.io/job-completion-index": str(i)}}, "spec": {"nodeName": names[i]},
                "status": status if i == 0 else {"phase": "Running"}} for i in (0, 1)]}
        if "/jobs/" in path:
            failed = [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]
            return {"status": {"conditions": failed if self.finish == "Failed" else []}}
        if path.endswith("/log"):
            return self.log
        raise ApiError(404, path)


def nccl_run(cluster: Cluster, *, pods_run: bool = True, timeout: float = 600) -> Verifier:
    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    outputs = {"cloud": "eks", "gpuPools": [H100], "podsRun": pods_run, "topologyLevels": list(LEVELS)}
    verifier = Verifier(cluster, outputs, run_id="a1b2c3", timeout=timeout, clock=lambda: clock[0], sleep=sleep,
                        report=lambda _: None, ssh_keys=lambda: ("private", "public"))
    try:
        verifier.run_nccl()
    finally:
        verifier.cleanup([])  # the GPU probe's namespace, never created here, is a 404 it passes over
    return verifier


P5_NODES = {f"ip-10-0-0-{i}": {"mlplatform.io/pool": "h100", "node.kubernetes.io/instance-type": "p5.48xlarge"}
            for i in (1, 2)}


def test_a_healthy_fabric_passes_and_everything_made_is_deleted():
    cluster = Cluster(P5_NODES, P5_RUN)
    (result,) = nccl_run(cluster).nccl_results
    assert (result.ok, result.verdict(), result.nodes) == (True, "ok", ["ip-10-0-0-1", "ip-10-0-0-2"])
    assert result.instance_type == "p5.48xlarge"
    assert cluster.objects == {}  # the Job, its Service, Secret and ConfigMap, and the namespace
    assert cluster.calls[-1] == ("DELETE", f"/api/v1/namespaces/{NCCL_NAMESPACE}")
    (line,) = [line for line in table([], [], [result]).splitlines() if line.startswith("NCCL h100")]
    assert line.split()[2:9] == ["ip-10-0-0-1,ip-10-0-0-2", "p5.48xlarge", "Libfabric", "351.6", "GB/s", "200",
                                 "GB/s"]
    assert line.endswith("ok")


def test_a_fabric_nccl_fell_back_from_fails_below_the_floor():
    (result,) = nccl_run(Cluster(P5_NODES, SOCKET_RUN)).nccl_results
    assert result.problems == ["bus bandwidth 11.2 GB/s is below the floor 200 GB/s (half of 3200 Gbps), "
                               "network Socket"]


def test_no_output_is_not_measured_and_fails_where_pods_run():
    (result,) = nccl_run(Cluster(P5_NODES, "mpirun: pod 1 unreachable\n", finish="Failed")).nccl_results
    assert not result.ok
    assert result.problems[0] == "pod 0 failed (exit code 1)"
    assert result.problems[1].startswith("NOT MEASURED: the pods produced no nccl-tests output")


def test_where_pods_do_not_run_it_says_not_measured_and_does_not_fail_or_read_logs():
    cluster = Cluster({"fake-1": {"mlplatform.io/pool": "h100"}, "fake-2": {"mlplatform.io/pool": "h100"}},
                      finish=None)
    (result,) = nccl_run(cluster, pods_run=False).nccl_results
    assert (result.ok, result.verdict(), result.nodes) == (True, NCCL_NOT_RUN, ["fake-1", "fake-2"])
    assert not [path for _, path in cluster.calls if path.endswith("/log")]
    assert cluster.objects == {}


def test_gke_types_are_judged_and_unknown_types_are_measured_but_not_judged():
    # A3 Mega whose NCCL fell back to TCP on the primary NIC: below the GPU NICs' floor, a failure.
    a3 = {n: labels | {"node.kubernetes.io/instance-type": "a3-megagpu-8g"} for n, labels in P5_NODES.items()}
    (result,) = nccl_run(Cluster(a3, SOCKET_RUN)).nccl_results
    assert result.problems == ["bus bandwidth 11.2 GB/s is below the floor 100 GB/s (half of 1600 Gbps), "
                               "network Socket"]
    other = {n: labels | {"node.kubernetes.io/instance-type": "g6e.48xlarge"} for n, labels in P5_NODES.items()}
    (result,) = nccl_run(Cluster(other, SOCKET_RUN)).nccl_results
    assert result.verdict() == "NOT JUDGED: no published rate for g6e.48xlarge (verify/nccl.py FLOORS)"


def test_a_job_that_fails_before_pod_0_ends_says_why():
    cluster = Cluster(P5_NODES)
    cluster.finish = "Failed"
    pods = cluster.request

    def pod_0_still_running(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        answer = pods(method, path, body)
        if "/pods?" in path:
            answer["items"][0]["status"] = {"phase": "Running"}  # the Job's deadline ends it next
        return answer

    cluster.request = pod_0_still_running  # type: ignore[method-assign]
    (result,) = nccl_run(cluster).nccl_results
    assert result.problems == ["the job failed: BackoffLimitExceeded"]
    assert cluster.objects == {}


def test_a_job_that_never_ends_times_out_and_is_still_deleted():
    cluster = Cluster(P5_NODES, finish=None)
    (result,) = nccl_run(cluster, timeout=60).nccl_results
    assert result.problems == ["not finished after 60s"]
    assert cluster.objects == {}


@pytest.mark.skipif(not shutil.which("ssh-keygen"), reason="ssh-keygen not installed")
def test_the_key_pair_is_openssh_s_own():
    private, public = nccl.ssh_key_pair()
    assert private.startswith("-----BEGIN OPENSSH PRIVATE KEY-----") and public.startswith("ssh-ed25519 ")


# ---- GKE's GPUDirect pools: the check's pods carry what a team's pod on the pool carries ------------------

@pytest.fixture(scope="module")
def gke_pools(fabrics) -> dict[str, PoolOutput]:  # noqa: F811 (fixture)
    """The pools as a GKE stack with an A3 Mega (h100), A3 High (h100x) and A3 Ultra (h200) pool exports them."""
    return {pool["name"]: PoolOutput.read(pool) for pool in fabrics.outputs["gpuPools"]}


NODE_NVIDIA_LIB = "/home/kubernetes/bin/nvidia/lib64"
# Per fabric: the pool, the check's image, the GPUDirect daemon beside NCCL (None: gIB has none), and what the
# NCCL container sees at a path: a host path, or the volume it shares with the daemon at the daemon's path.
GKE_FABRICS = {
    "tcpx": ("h100x", versions.GPUDIRECT_TCPX_INSTALLER_IMAGE, ("tcpx-daemon", versions.GPUDIRECT_TCPX_DAEMON_IMAGE),
             {"/usr/local/nvidia/lib64": NODE_NVIDIA_LIB, "/tmp": ("tcpx-daemon", "/run/tcpx")}),
    "tcpxo": ("h100", versions.GPUDIRECT_TCPXO_INSTALLER_IMAGE,
              ("tcpxo-daemon", versions.GPUDIRECT_TCPXO_DAEMON_IMAGE),
              {"/usr/local/nvidia/lib64": NODE_NVIDIA_LIB, "/dev/aperture_devices": "/dev/aperture_devices"}),
    "rdma": ("h200", versions.GPUDIRECT_RDMA_TEST_IMAGE, None,
             {"/usr/local/nvidia/lib64": NODE_NVIDIA_LIB, "/usr/local/gib": "/home/kubernetes/bin/gib"}),
}
# Where Google's images keep nccl-tests, built with MPI.
GOOGLE_TESTS = {"tcpx": "/third_party/nccl-tests-mpi/build", "tcpxo": "/third_party/nccl-tests-mpi/build",
                "rdma": "/third_party/nccl-tests/build"}


def gke_job(pool: PoolOutput) -> dict[str, Any]:
    return manifests(pool, "a1b2c3", "ssh-ed25519 AAAA x", "-----BEGIN-----", LEVELS)[-1]


def sees(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, Any]:
    """Per mount path of a container: the host path behind it, or the (container, path) of another container
    of the pod mounting the same non-host volume."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    others = [c for c in [*pod.get("initContainers", []), *pod["containers"]] if c is not container]
    seen: dict[str, Any] = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "hostPath" in volume:
            seen[mount["mountPath"]] = volume["hostPath"]["path"]
        else:
            shared = [(c["name"], m["mountPath"]) for c in others for m in c.get("volumeMounts", [])
                      if m["name"] == mount["name"]]
            seen[mount["mountPath"]] = shared[0] if shared else volume
    return seen


@pytest.mark.parametrize("fabric", sorted(GKE_FABRICS))
def test_a_gke_fabric_pools_check_pods_attach_to_its_gpu_nics_with_gpudirect(gke_pools, fabric):
    pool_name, image, daemon, mounts = GKE_FABRICS[fabric]
    pool = gke_pools[pool_name]
    assert pool.fabric == fabric
    pod = gke_job(pool)["spec"]["template"]
    # The pool's own NIC annotations, as its outputs give a team: eth0 on the cluster's network, then its GPU NICs.
    annotations = pod["metadata"]["annotations"]
    assert annotations["networking.gke.io/default-interface"] == "eth0"
    interfaces = json.loads(annotations["networking.gke.io/interfaces"])
    assert interfaces == json.loads(pool.pod_annotations["networking.gke.io/interfaces"])
    assert len(interfaces) == 1 + {"tcpx": 4, "tcpxo": 8, "rdma": 8}[fabric]
    assert all(i["network"].startswith(f"{pool_name}-") for i in interfaces[1:])
    (nccl_container,) = pod["spec"]["containers"]
    # Google's test image for the plugin, pinned by its exact tag.
    assert nccl_container["image"] == image and ":v" in image and "latest" not in image
    assert {path: seen for path, seen in sees(pod["spec"], nccl_container).items() if path in mounts} == mounts
    sidecars = pod["spec"].get("initContainers")
    if daemon is None:
        assert not sidecars and not [key for key in annotations if key.startswith("devices.gke.io/")]
        return
    (sidecar,) = sidecars
    # RxDM runs beside NCCL as a native sidecar: it ends when the nccl container does, so the Job's pods end.
    assert (sidecar["name"], sidecar["image"], sidecar["restartPolicy"]) == (*daemon, "Always")
    assert sees(pod["spec"], sidecar).items() >= {"/hostsysfs": "/sys", "/hostprocsysfs": "/proc/sys",
                                                  "/usr/local/nvidia/lib64": NODE_NVIDIA_LIB}.items()
    assert "NET_ADMIN" in sidecar["securityContext"]["capabilities"]["add"]
    # The NRI device injector gives that sidecar every GPU of the node, by its container name.
    devices = yaml.safe_load(annotations[f"devices.gke.io/container.{daemon[0]}"])
    assert {d["path"] for d in devices} >= {f"/dev/nvidia{i}" for i in range(8)} | {"/dev/nvidiactl"}


@pytest.mark.parametrize("fabric", sorted(GKE_FABRICS))
def test_a_gke_fabric_pools_check_runs_nccl_tests_where_googles_image_has_them(gke_pools, fabric):
    pool = gke_pools[GKE_FABRICS[fabric][0]]
    script = gke_job(pool)["spec"]["template"]["spec"]["containers"][0]["command"][2]
    assert f"{GOOGLE_TESTS[fabric]}/all_reduce_perf -b 1G -e 8G" in script
    assert "/opt/amazon" not in script and " mpirun --allow-run-as-root -np 16 " in script
    # MPI's own traffic on the primary NIC; the GPU NICs are NCCL's.
    assert "--mca btl_tcp_if_include eth0" in script
    assert all(f"-x {name}" in script for name in pool.nccl_env)
    # gIB sets NCCL's environment itself, in every rank; TCPX and TCPXO take theirs from the ConfigMap.
    assert ("/usr/local/gib/scripts/set_nccl_env.sh && exec" in script) == (fabric == "rdma")


def test_the_gke_fabric_pods_pass_the_strict_schemas_in_a_namespace_that_admits_them(gke_pools):
    pools = list(gke_pools.values())
    objects = [nccl.namespace(pools), *(o for pool in pools if pool.multi_node for o in manifests(
        pool, "a1b2c3", "ssh-ed25519 AAAA x", "-----BEGIN-----", LEVELS))]
    report = check_manifests(objects)
    assert not report.errors and not report.unchecked, report.errors + report.unchecked
    # Host paths and NET_ADMIN are beyond Pod Security `baseline`; pools without GPUDirect keep it.
    assert objects[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert nccl.namespace([PoolOutput.read(H100)])["metadata"]["labels"][
        "pod-security.kubernetes.io/enforce"] == "baseline"
