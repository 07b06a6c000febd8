"""Pod Security `baseline` in the team namespaces that run GKE's GPUDirect pods, as an admission policy that
lets exactly those pods take what they need from their nodes.

Google's GPUDirect pods (TCPX, TCPXO, RDMA) mount host folders, and TCPX's and TCPXO's receive-datapath
daemon adds NET_ADMIN: Pod Security `baseline`, the most a team namespace allows, refuses both, and its only
exemptions (namespaces, users, runtime classes) are the API server's own configuration, which GKE does not let
anyone set. So a team namespace that may use such a pool is labelled `enforce: privileged` (components/team.py),
and this ValidatingAdmissionPolicy enforces `baseline` there in its stead, check for check as
k8s.io/pod-security-admission v0.34.4 (policy/check_*.go, the version the namespaces' labels pin) has them,
with one difference: a pod held to a GPUDirect pool (nodeSelector mlplatform.io/pool) may have that pool's
own host volumes (its fabricPod, clouds/gke/fabric.py), mounted by its own containers read-only where Google's
pods need no more, and the fabric's daemon as the pool describes it, exactly (image, command, environment,
mounts) with its capabilities; TCPX's NCCL container may add IPC_LOCK. Ephemeral containers get nothing beyond
`baseline`.

It binds to every team namespace whose Pod Security does not enforce baseline or restricted, on every stack,
so no team namespace is ever left unguarded, and is always Deny: it stands in for an enforcement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi_kubernetes.admissionregistration.v1 import NamedRuleWithOperationsArgs
from pulumi_kubernetes.meta.v1 import LabelSelectorArgs, LabelSelectorRequirementArgs

from components.admission import Check, Policy, Subject, _cel, declare_policy
from core.handle import ClusterHandle, GpuPool
from core.vocabulary import POOL_LABEL, TEAM_LABEL
from versions import POD_SECURITY_ADMISSION

POLICY = "team-pod-security"
ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"
# The Kubernetes minor whose Pod Security this policy is read from (the module's v0.M.p is Kubernetes 1.M.p): the
# namespaces' labels pin their policy to the cluster's minor version (components/kube.py pod_security_labels),
# and a test holds the two together.
BASELINE_VERSION = "1." + POD_SECURITY_ADMISSION[1].split(".")[1]
# pod-security-admission v0.34.4, policy/check_capabilities_baseline.go.
BASELINE_CAPABILITIES = ("AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                         "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT")
# check_sysctls.go, the set from 1.32 on.
BASELINE_SYSCTLS = ("kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies",
                    "net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start",
                    "net.ipv4.ip_local_reserved_ports", "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
                    "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes", "net.ipv4.tcp_rmem",
                    "net.ipv4.tcp_wmem")
# check_seLinuxOptions.go, the types from 1.31 on.
SELINUX_TYPES = ("", "container_t", "container_init_t", "container_kvm_t", "container_engine_t")
# check_appArmorProfile.go and check_seccompProfile_baseline.go (1.19 on: fields only).
PROFILE_TYPES = ("RuntimeDefault", "Localhost")
APPARMOR_ANNOTATION_PREFIX = "container.apparmor.security.beta.kubernetes.io/"
# check_hostProbesAndhostLifecycle.go (1.34 on): where a container names a host to call.
PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
HOOKS = ("postStart", "preStop")
# Where the API server's ServiceAccount admission mounts a pod's token into every container, the daemon's too,
# before any policy sees the pod: the one mount the daemon may have beyond its own.
SERVICE_ACCOUNT_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
# The Job controller's completion index, by label with the PodIndexLabel gate (on by default) and by annotation
# without it.
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"
COMPLETION_INDEX_FIELDS = tuple(f"metadata.{where}['batch.kubernetes.io/job-completion-index']"
                                for where in ("labels", "annotations"))
# Container fields by which a daemon could run something other than the daemon: none may be set on it.
DAEMON_UNSET = ("args", "envFrom", "lifecycle", "livenessProbe", "readinessProbe", "startupProbe", "workingDir")


@dataclass(frozen=True)
class FabricAllowance:
    """What a pod held to one GPUDirect pool may take beyond `baseline`, read from the pool's fabricPod."""

    # Host volumes by name, and the node folder each is.
    volumes: Mapping[str, str]
    # Those the pod's own containers (not the daemon) may mount, and of those the ones they may mount writable.
    mounts: tuple[str, ...]
    writable: tuple[str, ...]
    # What the pod's own containers may add beyond baseline's.
    capabilities: tuple[str, ...]
    # The daemon, as it must be: image (none when the fabric has no daemon), name, command, env as NAME=value,
    # volumeMounts as name:mountPath[:ro], what each volume it mounts is (hostPath:<path>, or emptyDir), and its
    # capabilities.
    daemon_image: str = ""
    daemon_name: str = ""
    daemon_command: tuple[str, ...] = ()
    daemon_env: tuple[str, ...] = ()
    daemon_mounts: tuple[str, ...] = ()
    daemon_volumes: Mapping[str, str] = field(default_factory=dict)
    daemon_capabilities: tuple[str, ...] = ()

    def cel(self) -> str:
        # dyn(): the API server's CEL wants a map literal's values of one type.
        fields: dict[str, object] = {
            "volumes": dict(self.volumes), "mounts": list(self.mounts), "writable": list(self.writable),
            "capabilities": list(self.capabilities), "daemonImage": self.daemon_image,
            "daemonName": self.daemon_name, "daemonCommand": list(self.daemon_command),
            "daemonEnv": list(self.daemon_env), "daemonMounts": list(self.daemon_mounts),
            "daemonVolumes": dict(self.daemon_volumes), "daemonCapabilities": list(self.daemon_capabilities)}
        return "{" + ", ".join(f"{_cel(key)}: dyn({_cel(value)})" for key, value in sorted(fields.items())) + "}"


NO_ALLOWANCE = FabricAllowance(volumes={}, mounts=(), writable=(), capabilities=())


def allowance(fabric_pod: Mapping[str, Any]) -> FabricAllowance:
    host = {v["name"]: v["hostPath"]["path"] for v in fabric_pod.get("volumes", []) if "hostPath" in v}
    mounts = [m for m in fabric_pod.get("volumeMounts", []) if m["name"] in host]
    daemons = fabric_pod.get("initContainers", [])
    if len(daemons) > 1:
        raise ValueError(f"a fabric pod with more than one daemon: {[d['name'] for d in daemons]}")
    common = {"volumes": host, "mounts": tuple(m["name"] for m in mounts),
              "writable": tuple(m["name"] for m in mounts if not m.get("readOnly")),
              "capabilities": tuple(fabric_pod.get("capabilities", []))}
    if not daemons:
        return FabricAllowance(**common)
    daemon = daemons[0]
    volumes = {v["name"]: v for v in fabric_pod.get("volumes", [])}
    return FabricAllowance(
        **common, daemon_image=daemon["image"], daemon_name=daemon["name"], daemon_command=tuple(daemon["command"]),
        daemon_env=tuple(f"{e['name']}={e['value']}" for e in daemon.get("env", [])),
        daemon_mounts=tuple(_daemon_mount(m) for m in daemon.get("volumeMounts", [])),
        daemon_volumes={m["name"]: _volume_kind(volumes[m["name"]]) for m in daemon.get("volumeMounts", [])},
        daemon_capabilities=tuple(daemon.get("securityContext", {}).get("capabilities", {}).get("add", [])))


def _daemon_mount(mount: Mapping[str, Any]) -> str:
    return f"{mount['name']}:{mount['mountPath']}" + (":ro" if mount.get("readOnly") else "")


def _volume_kind(volume: Mapping[str, Any]) -> str:
    """What a fabricPod volume the daemon mounts is: its folder of the node, or the pod's own empty folder."""
    if "hostPath" in volume:
        return f"hostPath:{volume['hostPath']['path']}"
    if volume.get("emptyDir") == {}:
        return "emptyDir"
    raise ValueError(f"a fabric volume neither a host folder nor an empty one: {volume}")


def allowances(pools: Sequence[GpuPool]) -> dict[str, FabricAllowance]:
    return {pool.name: allowance(pool.fabric_pod) for pool in pools if pool.fabric_pod}


def _list(expression: str, field: str) -> str:
    return f"(has({expression}.{field}) ? {expression}.{field} : [])"


def _set(c: str, *path: str) -> str:
    """A CEL predicate: the securityContext field path of `c` is set."""
    steps = [f"{c}.securityContext", *(f"{c}.securityContext." + ".".join(path[:i + 1]) for i in range(len(path)))]
    return " && ".join(f"has({step})" for step in steps)


def _true(c: str, *path: str) -> str:
    return f"({_set(c, *path)} && {c}.securityContext.{'.'.join(path)})"


def variables(fabrics: Mapping[str, FabricAllowance]) -> list[tuple[str, str]]:
    table = "{" + ", ".join(f"{_cel(pool)}: {fabric.cel()}" for pool, fabric in sorted(fabrics.items())) + "}"
    return [
        # dyn(): containers, init and ephemeral containers are three types to the API server's type check.
        ("podContainers", f"dyn(object.spec.containers) + dyn({_list('object.spec', 'initContainers')})"),
        ("ephemeral", f"dyn({_list('object.spec', 'ephemeralContainers')})"),
        ("containers", "variables.podContainers + variables.ephemeral"),
        ("pool", f"has(object.spec.nodeSelector) && {_cel(POOL_LABEL)} in object.spec.nodeSelector ? "
                 f"object.spec.nodeSelector[{_cel(POOL_LABEL)}] : ''"),
        ("fabric", f"variables.pool in {table} ? {table}[variables.pool] : {NO_ALLOWANCE.cel()}"),
        ("hostVolumes", f"{_list('object.spec', 'volumes')}.filter(v, has(v.hostPath))"),
        ("hostVolumeNames", "variables.hostVolumes.map(v, v.name)"),
        # The pod's containers that run the fabric's daemon image; each must be the daemon, exactly: mounts of the
        # pod's own volumes too, one of which could hide the daemon's entrypoint under a script of the pod's.
        ("daemons", "variables.fabric.daemonImage == '' ? [] : "
                    "variables.podContainers.filter(c, c.image == variables.fabric.daemonImage)"),
        ("podSecurityContext", "has(object.spec.securityContext) ? object.spec.securityContext : {}"),
    ]


def _profile(holder: str, field: str, allowed: Sequence[str]) -> str:
    return f"(!has({holder}.{field}) || {holder}.{field}.type in {_cel(list(allowed))})"


def _selinux(options: str) -> str:
    return (f"((!has({options}.type) || {options}.type in {_cel(list(SELINUX_TYPES))}) && "
            f"(!has({options}.user) || {options}.user == '') && (!has({options}.role) || {options}.role == ''))")


def _capabilities(c: str) -> str:
    return f"({_set(c, 'capabilities', 'add')} ? {c}.securityContext.capabilities.add : [])"


def _completion_index(e: str) -> str:
    """A CEL predicate: env var `e` is the completion index the Job controller adds to every container and init
    container of an Indexed Job's pods, a multi-node JobSet's among them (k8s.io/kubernetes v1.34.4,
    pkg/controller/job/indexed_job_utils.go, addCompletionIndexEnvVariables): a number, which changes nothing
    the daemon runs."""
    return (f"({e}.name == {_cel(COMPLETION_INDEX_ENV)} && has({e}.valueFrom.fieldRef) && "
            f"{e}.valueFrom.fieldRef.fieldPath in {_cel(list(COMPLETION_INDEX_FIELDS))})")


def checks() -> tuple[Check, ...]:
    pod = "variables.podSecurityContext"
    baseline_caps = _cel(list(BASELINE_CAPABILITIES))
    daemon = "variables.daemons.exists(d, d.name == c.name)"
    mounts = _list("c", "volumeMounts")
    return (
        Check(f"!({_true('object.spec', 'windowsOptions', 'hostProcess')}) && "
              f"variables.containers.all(c, !({_true('c', 'windowsOptions', 'hostProcess')}))",
              "Pod Security baseline (hostProcess): Windows HostProcess pods run on the node itself. Remove "
              "securityContext.windowsOptions.hostProcess."),
        Check("!(has(object.spec.hostNetwork) && object.spec.hostNetwork) && "
              "!(has(object.spec.hostPID) && object.spec.hostPID) && "
              "!(has(object.spec.hostIPC) && object.spec.hostIPC)",
              "Pod Security baseline (hostNamespaces): a team pod shares no namespace with its node. Remove "
              "hostNetwork, hostPID and hostIPC (GKE gives a GPUDirect pod its GPU NICs through the pool's "
              "podAnnotations, not the host network)."),
        Check(f"variables.containers.all(c, !({_true('c', 'privileged')}))",
              "Pod Security baseline (privileged): no container of a team pod runs privileged. Remove "
              "securityContext.privileged; a GPUDirect pool's daemon runs unprivileged, as its fabricPod has it."),
        Check(f"variables.podContainers.all(c, {_capabilities('c')}.all(a, a in {baseline_caps} || "
              f"({daemon} ? a in variables.fabric.daemonCapabilities : a in variables.fabric.capabilities))) && "
              f"variables.ephemeral.all(c, {_capabilities('c')}.all(a, a in {baseline_caps}))",
              "Pod Security baseline (capabilities): a container adds capabilities beyond "
              f"{', '.join(BASELINE_CAPABILITIES)}. Only on a GPUDirect pool (nodeSelector {POOL_LABEL}) may "
              "its daemon add what its fabricPod gives it, and the pod's containers what fabricPod's "
              "capabilities list."),
        Check("variables.hostVolumes.all(v, v.name in variables.fabric.volumes && "
              "v.hostPath.path == variables.fabric.volumes[v.name])",
              "Pod Security baseline (hostPathVolumes): a team pod mounts no folder of its node. Only a pod held "
              f"to a GPUDirect pool by nodeSelector {POOL_LABEL}: <pool> may have that pool's fabricPod "
              "volumes, by their names and paths."),
        Check(f"variables.podContainers.all(c, {daemon} || {mounts}.all(m, !(m.name in variables.hostVolumeNames) "
              "|| (m.name in variables.fabric.mounts && (m.name in variables.fabric.writable || "
              "(has(m.readOnly) && m.readOnly))))) && "
              f"variables.ephemeral.all(c, {mounts}.all(m, !(m.name in variables.hostVolumeNames)))",
              "A container mounts a host volume that is not its to mount: the pod's own containers mount only the "
              "volumes of the pool's fabricPod volumeMounts, as those have them (readOnly: true where they say "
              "so); the daemon's host folders are the daemon's; ephemeral containers mount none."),
        # An ephemeral container that targets a container joins its processes, as shareProcessNamespace would.
        Check("(size(variables.daemons) == 0 || !has(object.spec.shareProcessNamespace) || "
              "!object.spec.shareProcessNamespace) && variables.ephemeral.all(c, !has(c.targetContainerName) || "
              "!variables.daemons.exists(d, d.name == c.targetContainerName))",
              "A pod running the GPUDirect daemon keeps its processes apart from the pod's other containers: "
              "remove shareProcessNamespace, and an ephemeral container's targetContainerName naming the daemon, "
              "which would put the daemon's processes, and the host folders they hold open, in the view of code "
              "that has neither."),
        # By name, and an init container (a sidecar), as fabricPod has it: no exec or attach without a container
        # name reaches it (the API server defaults only to a pod's one container), and daemon_connect() refuses
        # those that name it. Its volumes are what fabricPod's are: a volume of the pod's own under a host
        # volume's name, mounted where its LD_LIBRARY_PATH looks, would run the pod's code as the daemon.
        Check(f"variables.daemons.all(c, c.name == variables.fabric.daemonName && "
              f"{_list('object.spec', 'initContainers')}.exists(i, i.name == c.name) && "
              f"{_list('c', 'command')} == variables.fabric.daemonCommand && "
              + " && ".join(f"!has(c.{unset})" for unset in DAEMON_UNSET)
              + f" && {_list('c', 'env')}.all(e, !has(e.valueFrom) || {_completion_index('e')}) && "
              f"{_list('c', 'env')}.filter(e, !has(e.valueFrom)).map(e, e.name + '=' + "
              "(has(e.value) ? e.value : '')) == variables.fabric.daemonEnv && "
              f"{mounts}.all(m, !has(m.subPath) && !has(m.subPathExpr) && "
              "(!has(m.mountPropagation) || m.mountPropagation == 'None')) && "
              f"{mounts}.filter(m, m.mountPath != {_cel(SERVICE_ACCOUNT_MOUNT)})"
              ".map(m, m.name + ':' + m.mountPath + (has(m.readOnly) && m.readOnly ? ':ro' : '')) == "
              f"variables.fabric.daemonMounts && {mounts}.all(m, m.mountPath == {_cel(SERVICE_ACCOUNT_MOUNT)} ? "
              f"(has(m.readOnly) && m.readOnly && {_list('object.spec', 'volumes')}.exists(v, v.name == m.name && "
              "has(v.projected))) : (m.name in variables.fabric.daemonVolumes && "
              f"{_list('object.spec', 'volumes')}.exists(v, v.name == m.name && (has(v.hostPath) ? "
              "'hostPath:' + v.hostPath.path : (has(v.emptyDir) ? 'emptyDir' : '')) == "
              "variables.fabric.daemonVolumes[m.name]))))",
              "A container runs the GPUDirect daemon's image, which gets its capabilities and host folders only "
              "as the pool's fabricPod describes it: an init container of the same name, command, env, "
              "volumeMounts (readOnly as there, no mountPropagation) and volumes, and no args, "
              f"{', '.join(f for f in DAEMON_UNSET if f != 'args')}. Copy its initContainers entry and volumes "
              "as they are."),
        Check("variables.containers.all(c, [" + ", ".join(f"dyn(has(c.{probe}) ? c.{probe} : {{}})" for probe in PROBES)
              + ", " + ", ".join(f"dyn(has(c.lifecycle) && has(c.lifecycle.{hook}) ? c.lifecycle.{hook} : {{}})"
                                 for hook in HOOKS)
              + "].all(h, (!has(h.httpGet) || !has(h.httpGet.host) || h.httpGet.host == '') && "
              "(!has(h.tcpSocket) || !has(h.tcpSocket.host) || h.tcpSocket.host == '')))",
              "Pod Security baseline (hostProbesAndHostLifecycle): a probe or lifecycle hook checks its own "
              "container. Remove httpGet.host and tcpSocket.host from the probes and hooks."),
        Check("variables.containers.all(c, " + _list("c", "ports") + ".all(p, !has(p.hostPort) || p.hostPort == 0))",
              "Pod Security baseline (hostPorts): a team pod takes no port of its node. Remove ports[].hostPort; "
              "use a Service."),
        Check(f"{_profile(pod, 'appArmorProfile', PROFILE_TYPES)} && variables.containers.all(c, "
              f"!has(c.securityContext) || {_profile('c.securityContext', 'appArmorProfile', PROFILE_TYPES)}) && "
              "(!has(object.metadata.annotations) || object.metadata.annotations.all(k, "
              f"!k.startsWith({_cel(APPARMOR_ANNOTATION_PREFIX)}) || object.metadata.annotations[k] in "
              "['', 'runtime/default'] || object.metadata.annotations[k].startsWith('localhost/')))",
              "Pod Security baseline (appArmorProfile): AppArmor stays on. Set appArmorProfile.type "
              "RuntimeDefault or Localhost (or leave it unset), and no AppArmor annotation of 'unconfined'."),
        Check(f"(!has({pod}.seLinuxOptions) || {_selinux(f'{pod}.seLinuxOptions')}) && "
              f"variables.containers.all(c, !({_set('c', 'seLinuxOptions')}) || "
              f"{_selinux('c.securityContext.seLinuxOptions')})",
              "Pod Security baseline (seLinuxOptions): seLinuxOptions may set type only, to one of "
              f"{', '.join(t for t in SELINUX_TYPES if t)}, and never user or role."),
        Check(f"variables.containers.all(c, !({_set('c', 'procMount')}) || "
              "c.securityContext.procMount == 'Default')",
              "Pod Security baseline (procMount): /proc stays masked. Remove securityContext.procMount or set it "
              "to Default."),
        Check(f"{_profile(pod, 'seccompProfile', PROFILE_TYPES)} && variables.containers.all(c, "
              f"!has(c.securityContext) || {_profile('c.securityContext', 'seccompProfile', PROFILE_TYPES)})",
              "Pod Security baseline (seccompProfile): seccomp stays on. Set seccompProfile.type RuntimeDefault "
              "or Localhost, or leave it unset."),
        Check(f"{_list(pod, 'sysctls')}.all(s, s.name in {_cel(list(BASELINE_SYSCTLS))})",
              f"Pod Security baseline (sysctls): a team pod sets only the namespaced sysctls "
              f"{', '.join(BASELINE_SYSCTLS)}."),
    )


def significant_update() -> str:
    """When Pod Security judges a pod's update (pod-security-admission admission.go, isSignificantPodUpdate): a
    container or init container added, removed or given another image, or an ephemeral container added.
    Everything else a stored pod's update may change is what it was admitted with, so a finalizer's removal
    or Kueue's ungating is never held up, even by a policy that changed since the pod was created."""
    def images(obj: str) -> str:
        # One list of strings: the API server's CEL wants a list literal's elements of one type.
        return (f"{obj}.spec.containers.map(c, 'container ' + c.image) + "
                f"dyn({_list(f'{obj}.spec', 'initContainers')}).map(c, 'init ' + c.image) + "
                f"dyn({_list(f'{obj}.spec', 'ephemeralContainers')}).map(c, 'ephemeral ' + c.name + '=' + c.image)")
    return f"request.operation == 'CREATE' || {images('object')} != {images('oldObject')}"


def pod_security(fabrics: Mapping[str, FabricAllowance]) -> tuple[Policy, Subject]:
    subject = Subject(
        rules=(NamedRuleWithOperationsArgs(api_groups=[""], api_versions=["v1"], operations=["CREATE", "UPDATE"],
                                           resources=["pods", "pods/ephemeralcontainers"]),),
        match_conditions=(("significant-change", significant_update()),),
        variables=tuple(variables(fabrics)))
    return Policy(POLICY, checks(), always_deny=True), subject


def gpu_fabric(pod_security: str, gpu_direct_pools: Sequence[str]) -> bool:
    """Whether a team namespace enforces `privileged` and leaves baseline to the policy: it is baseline, and its
    team may use a GPUDirect pool. A restricted one stays restricted, which refuses GPUDirect's pods whatever
    (they run as root, with host folders), and config warns of it."""
    return pod_security == "baseline" and bool(gpu_direct_pools)


CONNECT_POLICY = "team-gpudirect-daemon-connect"


def daemon_connect(fabrics: Mapping[str, FabricAllowance]) -> tuple[Policy, Subject]:
    """`kubectl exec` and `attach` (CONNECT pods/exec, pods/attach) naming a GPUDirect daemon's container: a
    shell there would have the daemon's capabilities and host folders without being the daemon. Pod Security
    never judges a CONNECT, nor can a policy read the pod from one, so the daemon is known by the container name
    its fabricPod gives it, which the pod policy holds it to; a request naming no container reaches only a
    pod's one regular container, never the daemon, an init container."""
    names = sorted({fabric.daemon_name for fabric in fabrics.values() if fabric.daemon_name})
    subject = Subject(
        rules=(NamedRuleWithOperationsArgs(api_groups=[""], api_versions=["v1"], operations=["CONNECT"],
                                           resources=["pods/exec", "pods/attach"]),),
        match_conditions=(), variables=())
    return Policy(CONNECT_POLICY, (Check(
        f"!has(object.container) || !(object.container in {_cel(names)})",
        "A GPUDirect pool's daemon container runs only the daemon: no exec or attach into it, which would "
        "hold its capabilities and host folders. Exec into the pod's own containers."),), always_deny=True), subject


def unenforced_team_namespaces() -> LabelSelectorArgs:
    """Team namespaces whose Pod Security enforces neither baseline nor restricted (a missing label is
    privileged too)."""
    return LabelSelectorArgs(match_expressions=[
        LabelSelectorRequirementArgs(key=TEAM_LABEL, operator="Exists"),
        LabelSelectorRequirementArgs(key=ENFORCE_LABEL, operator="NotIn", values=["baseline", "restricted"])])


class TeamPodSecurity(pulumi.ComponentResource):
    def __init__(self, name: str, cluster: ClusterHandle, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlplatform:podsecurity:TeamPodSecurity", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=cluster.provider)
        policy, subject = pod_security(allowances(cluster.gpu_pools))
        declare_policy(f"{name}-policy", policy, subject, enforcement="deny",
                       namespace_selector=unenforced_team_namespaces(), opts=child)
        connect, connect_subject = daemon_connect(allowances(cluster.gpu_pools))
        declare_policy(f"{name}-connect", connect, connect_subject, enforcement="deny",
                       namespace_selector=unenforced_team_namespaces(), opts=child)
        self.policies = [f"mlplatform-{policy.name}", f"mlplatform-{connect.name}"]
        self.register_outputs({"policies": self.policies})
