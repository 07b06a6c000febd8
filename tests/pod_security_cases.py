"""Pods for the policy that enforces Pod Security `baseline` where a namespace's labels do not
(components/pod_security.py). The unit tests judge them with cel-python; `make e2e` has the real API server judge
BASELINE both in a namespace whose Pod Security enforces baseline and in one the platform's policy guards, and
the two must agree, and judge FABRIC under the policy built for GKE's three GPUDirect fabrics."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from clouds.gke.config import GPU_FABRICS
from clouds.gke.fabric import fabric_pod
from core.vocabulary import POOL_LABEL

IMAGE = "nvcr.io/nvidia/pytorch:25.01-py3"


def pod(*, annotations: dict[str, str] | None = None, container: dict[str, Any] | None = None,
        **spec: Any) -> dict[str, Any]:
    """A pod of one container; `container` adds to that container, `spec` to the pod's spec."""
    metadata: dict[str, Any] = {"name": "train"}
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": {"containers": [{"name": "main", "image": IMAGE, **(container or {})}], **spec}}


def secured(**context: Any) -> dict[str, Any]:
    return pod(container={"securityContext": context})


def init(**context: Any) -> dict[str, Any]:
    """A pod whose init container sets the securityContext (Pod Security visits init containers too)."""
    return pod(initContainers=[{"name": "setup", "image": IMAGE, "securityContext": context}])


# What Pod Security baseline (pod-security-admission v0.34.4, policy/check_*.go) admits and refuses, a case or
# more per check, and where a check reads more than one place (pod and container, annotation and field), each.
BASELINE: list[tuple[str, dict[str, Any], bool]] = [
    ("a plain pod", pod(), True),
    ("Pod Security restricted's own settings", pod(
        securityContext={"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
        container={"securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}),
     True),
    ("hostNetwork", pod(hostNetwork=True), False),
    ("hostPID", pod(hostPID=True), False),
    ("hostIPC", pod(hostIPC=True), False),
    ("host namespaces set false", pod(hostNetwork=False, hostPID=False, hostIPC=False), True),
    ("a privileged container", secured(privileged=True), False),
    ("a privileged init container", init(privileged=True), False),
    ("privileged false", secured(privileged=False), True),
    ("SYS_ADMIN", secured(capabilities={"add": ["SYS_ADMIN"]}), False),
    ("NET_ADMIN in an init container", init(capabilities={"add": ["NET_ADMIN"]}), False),
    ("IPC_LOCK", secured(capabilities={"add": ["IPC_LOCK"]}), False),
    ("baseline's capabilities", secured(capabilities={"add": ["NET_BIND_SERVICE", "CHOWN", "SYS_CHROOT"]}), True),
    ("dropping capabilities", secured(capabilities={"drop": ["ALL"]}), True),
    ("a hostPath volume", pod(volumes=[{"name": "etc", "hostPath": {"path": "/etc"}}]), False),
    ("other volumes", pod(volumes=[{"name": "scratch", "emptyDir": {}},
                                  {"name": "config", "configMap": {"name": "settings"}}]), True),
    ("a hostPort", pod(container={"ports": [{"containerPort": 8080, "hostPort": 8080}]}), False),
    ("a container port", pod(container={"ports": [{"containerPort": 8080}]}), True),
    ("AppArmor unconfined on the pod", pod(securityContext={"appArmorProfile": {"type": "Unconfined"}}), False),
    ("AppArmor unconfined on a container", secured(appArmorProfile={"type": "Unconfined"}), False),
    ("AppArmor's annotation unconfined",
     pod(annotations={"container.apparmor.security.beta.kubernetes.io/main": "unconfined"}), False),
    ("AppArmor runtime default and localhost", pod(
        annotations={"container.apparmor.security.beta.kubernetes.io/main": "runtime/default"},
        securityContext={"appArmorProfile": {"type": "Localhost", "localhostProfile": "k8s-train"}}), True),
    ("SELinux type spc_t", secured(seLinuxOptions={"type": "spc_t"}), False),
    ("SELinux user on the pod", pod(securityContext={"seLinuxOptions": {"user": "system_u"}}), False),
    ("SELinux role", secured(seLinuxOptions={"role": "system_r"}), False),
    ("SELinux container_engine_t and a level", secured(seLinuxOptions={"type": "container_engine_t",
                                                                      "level": "s0:c123,c456"}), True),
    # The API server takes Unmasked only in a pod of its own user namespace (hostUsers: false), which Pod Security
    # relaxes only behind an alpha gate (UserNamespacesPodSecurityStandards), off by default.
    ("procMount Unmasked", pod(hostUsers=False, container={"securityContext": {"procMount": "Unmasked"}}), False),
    ("procMount Default", secured(procMount="Default"), True),
    ("seccomp unconfined on the pod", pod(securityContext={"seccompProfile": {"type": "Unconfined"}}), False),
    ("seccomp unconfined on an init container", init(seccompProfile={"type": "Unconfined"}), False),
    ("seccomp localhost", secured(seccompProfile={"type": "Localhost", "localhostProfile": "train.json"}), True),
    ("an unsafe sysctl", pod(securityContext={"sysctls": [{"name": "kernel.msgmax", "value": "65536"}]}), False),
    ("safe sysctls", pod(securityContext={"sysctls": [{"name": "net.ipv4.tcp_rmem", "value": "4096 87380 6291456"},
                                                      {"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]}),
     True),
    ("a probe calling another host", pod(container={"livenessProbe": {"httpGet": {"host": "10.0.0.1", "port": 80}}}),
     False),
    ("a hook calling another host", pod(initContainers=[{"name": "setup", "image": IMAGE, "restartPolicy": "Always",
                                                         "lifecycle": {"postStart": {"tcpSocket": {
                                                             "host": "metadata.google.internal", "port": 80}}}}]),
     False),
    ("probes and hooks of the container itself", pod(container={
        "readinessProbe": {"tcpSocket": {"port": 8080}}, "lifecycle": {"preStop": {"httpGet": {"port": 8080}}}}),
     True),
    ("a Windows HostProcess pod", pod(securityContext={"windowsOptions": {"hostProcess": True}}, hostNetwork=True),
     False),
]


# GKE's three GPUDirect fabrics on pools named as the GKE tests name them, and their machine types.
FABRIC_POOLS = {"h100x": "a3-highgpu-8g", "h100": "a3-megagpu-8g", "h200": "a3-ultragpu-8g"}


def fabric_pods() -> dict[str, dict[str, Any]]:
    """Per pool, what a whole-node pod on it adds to its spec (the pool's fabricPod output)."""
    return {pool: fabric_pod(GPU_FABRICS[machine]) for pool, machine in FABRIC_POOLS.items()}


def on_fabric(pool: str, fabric: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A pod on the pool's fabric as a team writes it from the outputs (docs/multi-node.md): held to the pool,
    the daemon as an init container, the volumes, and the NCCL container's mounts and capabilities."""
    fabric = copy.deepcopy(dict(fabric or fabric_pods()[pool]))
    nccl: dict[str, Any] = {"name": "nccl", "image": IMAGE, "volumeMounts": fabric["volumeMounts"]}
    if fabric["capabilities"]:
        nccl["securityContext"] = {"capabilities": {"add": fabric["capabilities"]}}
    spec: dict[str, Any] = {"nodeSelector": {POOL_LABEL: pool}, "containers": [nccl], "volumes": fabric["volumes"]}
    if fabric["initContainers"]:
        spec["initContainers"] = fabric["initContainers"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "train"}, "spec": spec}


Change = Callable[[dict[str, Any]], None]


def _nccl(change: Callable[[dict[str, Any]], None]) -> Change:
    return lambda p: change(p["spec"]["containers"][0])


def _daemon(change: Callable[[dict[str, Any]], None]) -> Change:
    return lambda p: change(p["spec"]["initContainers"][0])


def _set(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda obj: obj.__setitem__(field, value)


def _host_volume(name: str, path: str) -> Change:
    return lambda p: p["spec"]["volumes"].append({"name": name, "hostPath": {"path": path}})


def _mount(name: str, path: str, read_only: bool | None = None) -> Callable[[dict[str, Any]], None]:
    mount: dict[str, Any] = {"name": name, "mountPath": path} | ({} if read_only is None else {"readOnly": read_only})
    return lambda c: c.setdefault("volumeMounts", []).append(mount)


def _writable(name: str) -> Callable[[dict[str, Any]], None]:
    def change(container: dict[str, Any]) -> None:
        for mount in container["volumeMounts"]:
            if mount["name"] == name:
                mount.pop("readOnly", None)
    return change


def _add_capability(capability: str) -> Callable[[dict[str, Any]], None]:
    return lambda c: c.setdefault("securityContext", {}).setdefault("capabilities", {}).setdefault(
        "add", []).append(capability)


def _unpinned(p: dict[str, Any]) -> None:
    del p["spec"]["nodeSelector"]


def _other_pool(pool: str) -> Change:
    return lambda p: p["spec"]["nodeSelector"].__setitem__(POOL_LABEL, pool)


def _daemon_as_main(p: dict[str, Any]) -> None:
    daemon = p["spec"]["initContainers"][0]
    p["spec"]["containers"].append({**daemon, "name": "shell", "command": ["/bin/sh", "-c", "ip link"]})
    del p["spec"]["containers"][-1]["restartPolicy"]


def _token(p: dict[str, Any]) -> None:
    """What the API server's ServiceAccount admission adds to every container before a policy judges the pod."""
    p["spec"]["volumes"].append({"name": "kube-api-access-x7k2p", "projected": {"sources": [
        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}]}})
    for container in p["spec"]["containers"] + p["spec"].get("initContainers", []):
        container.setdefault("volumeMounts", []).append({
            "name": "kube-api-access-x7k2p", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
            "readOnly": True})


# What the Job controller adds to every container and init container of an Indexed Job's pods
# (k8s.io/kubernetes v1.34.4, pkg/controller/job/indexed_job_utils.go, addCompletionIndexEnvVariables; the
# label form with the PodIndexLabel gate, on by default, the annotation form without it).
COMPLETION_INDEX_ENV = {"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
    "fieldPath": "metadata.labels['batch.kubernetes.io/job-completion-index']"}}}


def indexed(p: dict[str, Any]) -> None:
    """The pod as the Job controller creates it for an Indexed Job (a multi-node JobSet's Jobs are)."""
    for container in p["spec"]["containers"] + p["spec"].get("initContainers", []):
        if not any(e["name"] == COMPLETION_INDEX_ENV["name"] for e in container.get("env", [])):
            container.setdefault("env", []).append(copy.deepcopy(COMPLETION_INDEX_ENV))


def _index_from(source: dict[str, Any]) -> Change:
    def change(p: dict[str, Any]) -> None:
        p["spec"]["initContainers"][0]["env"].append({"name": "JOB_COMPLETION_INDEX", "valueFrom": source})
    return change


def _over_entrypoint(p: dict[str, Any]) -> None:
    """An emptyDir the NCCL container writes, mounted where TCPXO's daemon runs its entrypoint from."""
    p["spec"]["volumes"].append({"name": "scripts", "emptyDir": {}})
    p["spec"]["containers"][0]["volumeMounts"].append({"name": "scripts", "mountPath": "/scripts"})
    p["spec"]["initContainers"][0]["volumeMounts"].append({"name": "scripts", "mountPath": "/fts"})


def _library_of_the_pods(p: dict[str, Any]) -> None:
    """The node's NCCL folder's name on an empty folder of the pod's, where the daemon's LD_LIBRARY_PATH looks,
    filled before the daemon starts by an init container of the pod's: its code would run as the daemon."""
    p["spec"]["volumes"][0] = {"name": NVIDIA_LIB, "emptyDir": {}}
    p["spec"]["containers"][0]["volumeMounts"][0].pop("readOnly")
    p["spec"]["initContainers"].insert(0, {"name": "stage", "image": IMAGE, "command": ["cp", "-r", "/opt/lib/.", "/lib64"],
                                           "volumeMounts": [{"name": NVIDIA_LIB, "mountPath": "/lib64"}]})


def _daemon_to_containers(p: dict[str, Any]) -> None:
    """The daemon as Google's own test pods run it, a regular container: `kubectl exec` without -c could reach it."""
    daemon = p["spec"].pop("initContainers")[0]
    del daemon["restartPolicy"]
    p["spec"]["containers"].insert(0, daemon)


NVIDIA_LIB = "gpudirect-nvidia-lib"
# (case, pool, change to the pod on_fabric(pool) makes, admitted). Each pool's unchanged pod is admitted.
FABRIC: list[tuple[str, str, Change | None, bool]] = [
    *((f"{pool}'s pod as its fabricPod has it", pool, None, True) for pool in FABRIC_POOLS),
    ("a GPUDirect pod not held to its pool", "h100", _unpinned, False),
    ("a TCPXO pod on the TCPX pool", "h100", _other_pool("h100x"), False),
    ("an RDMA pod on a pool of no fabric", "h200", _other_pool("a100"), False),
    ("another host folder", "h100", _host_volume("root", "/"), False),
    ("a fabric volume of another path", "h200", lambda p: p["spec"]["volumes"][1]["hostPath"].__setitem__(
        "path", "/home/kubernetes"), False),
    ("the NCCL container mounting the node's /sys", "h100", _nccl(_mount("gpudirect-sys", "/sys")), False),
    ("the NCCL container writing the node's NCCL", "h100", _nccl(_writable(NVIDIA_LIB)), False),
    ("the RDMA container writing the node's gIB", "h200", _nccl(_writable("gpudirect-gib")), False),
    ("a second container reading the node's NCCL", "h100x",
     lambda p: p["spec"]["containers"].append({"name": "logs", "image": IMAGE, "volumeMounts": [
         {"name": NVIDIA_LIB, "mountPath": "/nccl", "readOnly": True}]}), True),
    ("the aperture devices writable, as TCPXO's LLCM maps them", "h100",
     _nccl(lambda c: c["volumeMounts"].__setitem__(1, {**c["volumeMounts"][1], "readOnly": False})), True),
    ("IPC_LOCK on TCPX's NCCL container", "h100x", None, True),
    ("IPC_LOCK on TCPXO's NCCL container", "h100", _nccl(_add_capability("IPC_LOCK")), False),
    ("NET_ADMIN on the NCCL container", "h100", _nccl(_add_capability("NET_ADMIN")), False),
    ("the daemon privileged", "h100", _daemon(lambda c: c["securityContext"].__setitem__("privileged", True)), False),
    ("the daemon adding SYS_ADMIN", "h100x", _daemon(_add_capability("SYS_ADMIN")), False),
    ("the daemon with another command", "h100", _daemon(_set("command", ["/bin/sh", "-c", "id"])), False),
    ("the daemon with args", "h100x", _daemon(_set("args", ["--verbose"])), False),
    ("the daemon preloading a library", "h100x", _daemon(lambda c: c["env"].append(
        {"name": "LD_PRELOAD", "value": "/run/tcpx/hook.so"})), False),
    ("the daemon with envFrom", "h100", _daemon(_set("envFrom", [{"configMapRef": {"name": "x"}}])), False),
    ("the daemon with a postStart hook", "h100", _daemon(_set("lifecycle", {"postStart": {"exec": {
        "command": ["/bin/sh", "-c", "id"]}}})), False),
    ("the daemon with an exec probe", "h100x", _daemon(_set("startupProbe", {"exec": {"command": ["id"]}})), False),
    ("the daemon's /sys at another path", "h100", _daemon(lambda c: c["volumeMounts"][1].__setitem__(
        "mountPath", "/sys")), False),
    ("the daemon's image running a shell beside it", "h100", _daemon_as_main, False),
    ("the service account token the API server mounts", "h100", _token, True),
    ("the completion index the Job controller gives an Indexed Job's daemon", "h100x", indexed, True),
    ("the daemon's completion index from a Secret", "h100", _index_from({"secretKeyRef": {"name": "x", "key": "k"}}),
     False),
    ("the daemon's completion index from another field", "h100", _index_from({"fieldRef": {
        "fieldPath": "metadata.annotations['x']"}}), False),
    ("a folder of the pod's over the daemon's entrypoint", "h100", _over_entrypoint, False),
    ("the daemon sized and its pull policy set", "h100", _daemon(lambda c: c.update(
        resources={"requests": {"cpu": "1"}}, imagePullPolicy="IfNotPresent")), True),
    ("the daemon's processes shared with the pod", "h100",
     lambda p: p["spec"].__setitem__("shareProcessNamespace", True), False),
    ("an RDMA pod sharing its processes (it runs no daemon)", "h200",
     lambda p: p["spec"].__setitem__("shareProcessNamespace", True), True),
    ("hostNetwork on a GPUDirect pod", "h100", lambda p: p["spec"].__setitem__("hostNetwork", True), False),
    ("the pod's own library folder where the daemon loads its libraries", "h100", _library_of_the_pods, False),
    ("the daemon writing the node's NCCL", "h100x", _daemon(_writable(NVIDIA_LIB)), False),
    ("the daemon seeing the node's mounts under /sys", "h100", _daemon(
        lambda c: c["volumeMounts"][1].__setitem__("mountPropagation", "HostToContainer")), False),
    ("the daemon under another name", "h100x", _daemon(_set("name", "rxdm")), False),
    ("the daemon as a regular container", "h100", _daemon_to_containers, False),
]


def fabric_case(pool: str, change: Change | None) -> dict[str, Any]:
    obj = on_fabric(pool)
    if change:
        change(obj)
    return obj
