"""`make verify`'s NCCL check: a two-node all-reduce (nccl-tests' all_reduce_perf under Open MPI) per multi-node
pool, judged against a bus-bandwidth floor per instance type.

Two whole-node pods of an indexed Job, each with every GPU, fabric device and huge page of its node and the pool's
NCCL environment (the same `nccl-<pool>` ConfigMap team namespaces get); on GKE's GPUDirect pools also what a
team's pod there carries, from the pool's outputs (the GPU NICs' annotations, the plugin's daemon sidecar, its
volumes and mounts), and Google's test image for the plugin. Pod 0 starts mpirun, which reaches pod 1
by ssh through the Job's headless Service, as MPI-operator launchers do; a key pair made for the run is all the
two share. An indexed Job rather than a JobSet: the check runs outside Kueue (like the GPU probe, in a namespace
of verify's own, so a full cluster's queues never hold it back), where a JobSet adds nothing a Job lacks, and
one controller fewer stands between the check and its result.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.outputs import PoolOutput
from core.vocabulary import GPU_RESOURCE, POOL_LABEL, REQUIRED_TOPOLOGY
from verify.probe import PROBE_LABEL, toleration
from versions import (GPUDIRECT_RDMA_TEST_IMAGE, GPUDIRECT_TCPX_INSTALLER_IMAGE, GPUDIRECT_TCPXO_INSTALLER_IMAGE,
                      NCCL_TESTS_IMAGE)

# The check's namespace: sshd and mpirun run as root, as the image is built (Pod Security `baseline` allows
# that, `restricted` does not), so it is not the GPU probe's `restricted` namespace.
NCCL_NAMESPACE = "mlplatform-verify-nccl"
# Long enough for two nodes from zero and the run; a stuck check is ended by the API server, not left behind.
ACTIVE_DEADLINE_SECONDS = 1800
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
SSH_MOUNT = "/etc/nccl-ssh"
SSH_PORT = 22
# Message sizes 1 GiB to 8 GiB, doubling: all bandwidth-bound, so nccl-tests' "Avg bus bandwidth" over them is
# the fabric's rate rather than an average dragged down by latency-bound small messages.
ALL_REDUCE_ARGS = ("-b", "1G", "-e", "8G", "-f", "2", "-g", "1")


@dataclass(frozen=True)
class Launcher:
    """The image the check runs for a pool's fabric, and how Open MPI and nccl-tests are found and run in it."""

    image: str
    mpirun: str
    # nccl-tests' build folder.
    tests: str
    # What Open MPI's launched ranks need from the launcher's environment (the image sets them; ssh does not
    # carry them to pod 1).
    env: tuple[str, ...]
    # The interfaces Open MPI's own TCP traffic may take.
    mpi_interfaces: tuple[str, ...]


# Google's images: mpirun from PATH, given PATH and LD_LIBRARY_PATH, its TCP on eth0 only (the GPU NICs are
# NCCL's), as Google's scripts run them (gpudirect-tcpx/nccl-config.yaml's run-nccl.sh; AI-Hypercomputer/
# gpu-recipes src/helm-charts/a3mega and a3ultra/nccl-tests/run_test.sh, which also show where nccl-tests are).
_GOOGLE_ENV = ("PATH", "LD_LIBRARY_PATH")
_GOOGLE_MPI = ("--mca", "btl_tcp_if_include", "eth0")
LAUNCHERS: dict[str, Launcher] = {
    # A pool without a GKE GPUDirect fabric: AWS's image (its libraries, NCCL's preload, the interfaces NCCL and
    # MPI may use).
    "": Launcher(NCCL_TESTS_IMAGE, "/opt/amazon/openmpi/bin/mpirun", "/opt/nccl-tests/build",
                 ("PATH", "LD_LIBRARY_PATH", "LD_PRELOAD", "OPAL_PREFIX", "NCCL_SOCKET_IFNAME", "PMIX_MCA_gds"),
                 ("--mca", "btl_tcp_if_exclude", "lo,docker0,veth_def_agent")),
    "tcpx": Launcher(GPUDIRECT_TCPX_INSTALLER_IMAGE, "mpirun", "/third_party/nccl-tests-mpi/build", _GOOGLE_ENV,
                     _GOOGLE_MPI),
    "tcpxo": Launcher(GPUDIRECT_TCPXO_INSTALLER_IMAGE, "mpirun", "/third_party/nccl-tests-mpi/build", _GOOGLE_ENV,
                      _GOOGLE_MPI),
    "rdma": Launcher(GPUDIRECT_RDMA_TEST_IMAGE, "mpirun", "/third_party/nccl-tests/build", _GOOGLE_ENV, _GOOGLE_MPI),
}


def launcher(pool: PoolOutput) -> Launcher:
    # A flavour this check does not know yet runs AWS's image: NCCL then shows the network it fell back to.
    return LAUNCHERS.get(pool.fabric, LAUNCHERS[""])

# Which network NCCL picked (its INIT/NET log lines): Libfabric (aws-ofi-nccl over EFA), IB, or Socket (TCP).
NCCL_DEBUG = {"NCCL_DEBUG": "INFO", "NCCL_DEBUG_SUBSYS": "INIT,NET"}


@dataclass(frozen=True)
class Floor:
    """An instance type's GPU-to-GPU network rate as its cloud publishes it, and the check's floor from it."""

    link_gbps: int
    source: str
    # Reached only with networking the platform does not set up: measured and shown, never judged.
    unjudged: str = ""

    @property
    def floor_gbs(self) -> float:
        # nccl-tests reports GB/s (1e9 bytes). Half the link rate: healthy two-node runs reach most of it, while
        # a fabric NCCL fell back from (TCP sockets, one NIC of many, no GPUDirect) gives a small fraction; so
        # half fails what is broken and passes a loaded or untuned but working fabric.
        return self.link_gbps / 8 * FLOOR_FRACTION


FLOOR_FRACTION = 0.5
AWS_P5_EFA = "AWS EC2 docs, p5-efa.html: P5 and P5e, up to 32 network cards, up to 3,200 Gbps"
GCP_GPU_NETWORK = "Google Compute Engine docs, gpus/gpu-network-bandwidth"
FLOORS: dict[str, Floor] = {
    "p5.48xlarge": Floor(3200, AWS_P5_EFA),
    "p5e.48xlarge": Floor(3200, AWS_P5_EFA),
    "p4d.24xlarge": Floor(400, "AWS Compute Blog, 'Amazon EC2 P4d instances deep dive': 400 Gbps EFA, GPUDirect RDMA"),
    # The GPU NICs only: the page's totals (1,000, 1,800 and 3,600 Gbps) add the gVNICs for other traffic, which
    # are not NCCL's.
    "a3-highgpu-8g": Floor(800, f"{GCP_GPU_NETWORK}: A3 High, 4 GPU NICs of 200 Gbps, GPUDirect-TCPX"),
    "a3-megagpu-8g": Floor(1600, f"{GCP_GPU_NETWORK}: A3 Mega, 8 GPU NICs of 200 Gbps, GPUDirect-TCPXO"),
    "a3-ultragpu-8g": Floor(3200, f"{GCP_GPU_NETWORK}: A3 Ultra, 8 CX-7 NICs, 3,200 Gbps, GPUDirect RDMA"),
    "a4-highgpu-8g": Floor(3200, f"{GCP_GPU_NETWORK}: A4, 8 CX-7 NICs, 3,200 Gbps, GPUDirect RDMA"),
}

# nccl-tests (src/common.cu at the image's v2.16.9): rank 0 prints one row per message size,
#   size count type redop root | time algbw busbw #wrong (out-of-place) | time algbw busbw #wrong (in-place)
# then "# Out of bounds values : <n> OK|FAILED" and "# Avg bus bandwidth    : <GB/s> [OK|FAILED]".
_ROW = re.compile(r"^[ \t]*(\d+)[ \t]+(\d+)[ \t]+\S+[ \t]+\S+[ \t]+-?\d+"
                  r"[ \t]+\S+[ \t]+\S+[ \t]+([\d.]+)[ \t]+\S+"  # out-of-place: time, algbw, busbw, #wrong
                  r"[ \t]+\S+[ \t]+\S+[ \t]+([\d.]+)[ \t]+\S+[ \t]*$", re.MULTILINE)  # in-place
_OUT_OF_BOUNDS = re.compile(r"^# Out of bounds values : (\d+)", re.MULTILINE)
_AVG_BUS_BANDWIDTH = re.compile(r"^# Avg bus bandwidth\s*: ([\d.eE+-]+)", re.MULTILINE)
_NETWORK = re.compile(r"NCCL INFO Using network (\S+)")


@dataclass(frozen=True)
class AllReduceOutput:
    avg_busbw: float | None
    # The largest message's in-place bus bandwidth: what a reader compares with the average.
    largest: tuple[int, float] | None
    wrong_values: int | None
    network: str


def parse(log: str) -> AllReduceOutput:
    rows = [(int(m.group(1)), float(m.group(4))) for m in _ROW.finditer(log)]
    avg = _AVG_BUS_BANDWIDTH.search(log)
    wrong = _OUT_OF_BOUNDS.search(log)
    networks = sorted(set(_NETWORK.findall(log)))
    return AllReduceOutput(float(avg.group(1)) if avg else None, max(rows) if rows else None,
                           int(wrong.group(1)) if wrong else None, ",".join(networks))


def _names(pool: PoolOutput, run_id: str) -> tuple[str, str]:
    job = f"nccl-{pool.name}-{run_id}"
    return job, job  # the Service (the pods' subdomain) is named as the Job


def ssh_key_pair() -> tuple[str, str]:
    """A key pair for this run only, made by ssh-keygen (OpenSSH's own format, no crypto written here)."""
    if shutil.which("ssh-keygen") is None:
        raise NoKeys("ssh-keygen is not on PATH (install OpenSSH's client) to make the check's key pair")
    with tempfile.TemporaryDirectory() as folder:
        key = Path(folder) / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mlplatform-verify", "-f", str(key)],
                       check=True, capture_output=True)
        return key.read_text(), key.with_suffix(".pub").read_text()


class NoKeys(Exception):
    """No key pair for the run: the check cannot start, which is its result."""


def launch_script(pool: PoolOutput) -> str:
    gpus = pool.gpus_per_node
    run = launcher(pool)
    exported = " ".join(f"-x {name}" for name in (*run.env, *sorted(pool.nccl_env), *NCCL_DEBUG))
    tests = f"{run.tests}/all_reduce_perf {' '.join(ALL_REDUCE_ARGS)}"
    # gIB: every rank sources the plugin's NCCL settings first, as Google's A3 Ultra test does in each rank
    # (gpu-recipes a3ultra/nccl-tests/run_test.sh: mpirun ... bash -c "source set_nccl_env.sh; all_reduce_perf").
    source = pool.fabric_pod.get("ncclEnvScript")
    if source:
        tests = f"bash -c '. {source} && exec \"$0\" \"$@\"' {tests}"
    return "\n".join((
        "set -u",
        "install -d -m 700 /root/.ssh",
        f"install -m 600 {SSH_MOUNT}/id_ed25519 /root/.ssh/id_ed25519",
        f"install -m 600 {SSH_MOUNT}/id_ed25519.pub /root/.ssh/authorized_keys",
        # The client's settings whatever the image's are: Google's images set their sshd on port 222 and check
        # host keys (their scripts pass -p 222 and StrictHostKeyChecking=no); this run's sshd listens on 22 and
        # its host keys are new each run.
        f"printf 'Host *\\n  Port {SSH_PORT}\\n  IdentityFile /root/.ssh/id_ed25519\\n  StrictHostKeyChecking no\\n"
        "  UserKnownHostsFile /dev/null\\n  LogLevel ERROR\\n' > /root/.ssh/config && chmod 600 /root/.ssh/config",
        "ssh-keygen -A >/dev/null && mkdir -p /run/sshd",
        'if [ "$JOB_COMPLETION_INDEX" != 0 ]; then',
        f"  /usr/sbin/sshd -e -p {SSH_PORT} || exit 1",
        "  # Until the launcher's run is over; the Job's deadline ends it otherwise.",
        "  while [ ! -e /tmp/nccl-done ]; do sleep 2; done",
        "  exit 0",
        "fi",
        'peer="$NCCL_JOB-1.$NCCL_SERVICE"',
        "reached=",
        # Pod 1 may start later (its node from zero): five minutes for its sshd, then a plain failure.
        'for attempt in $(seq 150); do ssh -o BatchMode=yes -o ConnectTimeout=5 "$peer" true 2>/dev/null '
        "&& { reached=1; break; }; sleep 2; done",
        '[ -n "$reached" ] || { echo "nccl check: pod 1 ($peer) not reachable by ssh after 5 minutes"; exit 1; }',
        # Open MPI 4 cuts a host name at its first dot unless told to keep it, and pod 1 is reached by
        # <pod>.<service> only (Google's scripts set the same: gpu-recipes nccl-tests/run_test.sh).
        f'OMPI_MCA_orte_keep_fqdn_hostnames=1 {run.mpirun} --allow-run-as-root -np {2 * gpus} '
        f'-H "localhost:{gpus},$peer:{gpus}" --bind-to none --mca pml ^ucx --mca btl tcp,self '
        f"{' '.join(run.mpi_interfaces)} {exported} {tests}",
        "status=$?",
        'ssh -o BatchMode=yes "$peer" touch /tmp/nccl-done',
        "exit $status",
    ))


def namespace(pools: Sequence[PoolOutput] = ()) -> dict[str, Any]:
    # GPUDirect's pods (GKE) mount host paths and add NET_ADMIN and IPC_LOCK, which only `privileged` allows.
    level = "privileged" if any(pool.fabric_pod for pool in pools) else "baseline"
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": NCCL_NAMESPACE, "labels": {PROBE_LABEL: "true",
                                                            "pod-security.kubernetes.io/enforce": level}}}


def manifests(pool: PoolOutput, run_id: str, public_key: str, private_key: str,
              topology_levels: tuple[str, ...]) -> list[dict[str, Any]]:
    """The Secret, ConfigMap, headless Service and indexed Job of one pool's check, in creation order."""
    job, service = _names(pool, run_id)
    labels = {PROBE_LABEL: "true", POOL_LABEL: pool.name}
    meta = {"namespace": NCCL_NAMESPACE, "labels": labels}
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": f"{job}-ssh", **meta},
         "stringData": {"id_ed25519": private_key, "id_ed25519.pub": public_key}},
        # The data of every team namespace's nccl-<pool>, taken with envFrom as a team's job does (named per run,
        # as all else here, so that a namespace an interrupted run left holds no object of the same name).
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{job}-env", **meta},
         "data": dict(pool.nccl_env)},
        # Headless, and publishing pods before they are ready: pod 0 finds pod 1 by its DNS name at once.
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": service, **meta},
         "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                  "selector": {"batch.kubernetes.io/job-name": job}, "ports": [{"name": "ssh", "port": 22}]}},
    ]
    # The node's huge pages too (the pool's hugePages, EFA's bounce buffers), as a team's whole-node pod takes
    # them: a container asking for none gets a hugetlb limit of 0, and libfabric would run without them.
    limits = {GPU_RESOURCE: str(pool.gpus_per_node), **{k: str(v) for k, v in pool.fabric_devices.items()},
              **pool.huge_pages, "memory": "64Gi"}
    # What Kueue's topology-aware admission would need of a team's job (the gang policies: whole nodes, a level
    # named): inert in this namespace, which Kueue does not manage, but the pods are written as a team's are.
    annotations = {REQUIRED_TOPOLOGY: topology_levels[-2]} if len(topology_levels) >= 2 else {}
    # And what a team's pod on the pool's fabric carries, from the same outputs (GKE: the GPU NICs' annotations,
    # the GPUDirect daemon, its volumes and the NCCL container's mounts and capabilities).
    annotations |= pool.pod_annotations
    fabric = pool.fabric_pod
    capabilities = list(fabric.get("capabilities") or [])
    objects.append({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": job, **meta},
        "spec": {
            "completionMode": "Indexed", "completions": 2, "parallelism": 2,
            # One try: a failure is the result, reported with its log, never retried into a pass.
            "backoffLimit": 0, "activeDeadlineSeconds": ACTIVE_DEADLINE_SECONDS,
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {
                    "restartPolicy": "Never",
                    "subdomain": service,
                    "nodeSelector": {POOL_LABEL: pool.name},
                    "tolerations": [toleration(taint) for taint in pool.taints],
                    **({"initContainers": list(fabric["initContainers"])} if fabric.get("initContainers") else {}),
                    "containers": [{
                        "name": "nccl",
                        "image": launcher(pool).image,
                        "command": ["bash", "-c", launch_script(pool)],
                        "env": [{"name": "NCCL_JOB", "value": job}, {"name": "NCCL_SERVICE", "value": service},
                                *({"name": k, "value": v} for k, v in NCCL_DEBUG.items())],
                        "envFrom": [{"configMapRef": {"name": f"{job}-env"}}],
                        "resources": {"limits": limits, "requests": limits | {"cpu": "8"}},
                        # Root (sshd, mpirun) but nothing gained past it: no setuid binary is needed.
                        "securityContext": {"allowPrivilegeEscalation": False,
                                            **({"capabilities": {"add": capabilities}} if capabilities else {})},
                        "volumeMounts": [{"name": "ssh", "mountPath": SSH_MOUNT, "readOnly": True},
                                         {"name": "shm", "mountPath": "/dev/shm"},
                                         *(fabric.get("volumeMounts") or [])],
                    }],
                    "volumes": [{"name": "ssh", "secret": {"secretName": f"{job}-ssh", "defaultMode": 0o400}},
                                # NCCL's shared-memory transport between a node's GPUs outgrows the 64 MiB default.
                                {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}},
                                *(fabric.get("volumes") or [])],
                },
            },
        },
    })
    return objects
