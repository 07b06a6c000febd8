"""The platform's rules, as plain functions of a resource's type and inputs (or of a whole stack).

Each rule returns its violations as messages that tell the user how to fix them. Inputs use the providers'
schema names (camelCase), as the Pulumi engine and a CrossGuard pack see them. A value that cannot be known
during a preview is the UNKNOWN marker: a rule never fails on it and never reports a violation it cannot
see. This module imports nothing from the project, so that the policy pack can load it on its own.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

MANDATORY = "mandatory"
ADVISORY = "advisory"

HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
NAMESPACE = "kubernetes:core/v1:Namespace"
KARPENTER_NODE_POOL = "kubernetes:karpenter.sh/v1:NodePool"
EKS_CLUSTER = "aws:eks/cluster:Cluster"
EKS_NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
GKE_CLUSTER = "gcp:container/cluster:Cluster"
GKE_NODE_POOL = "gcp:container/nodePool:NodePool"

GPU_TAINT_KEY = "nvidia.com/gpu"
GPU_TAINT_VALUE = "present"
GPU_RESOURCE = "nvidia.com/gpu"
TEAM_LABEL = "mlplatform.io/team"
# Per-node GPU agents: the only workloads that belong on GPU nodes without asking for a GPU.
GPU_AGENT_CHARTS = frozenset({"nvidia-device-plugin", "fake-gpu-operator", "dcgm-exporter",
                              "aws-efa-k8s-device-plugin"})
# GKE's per-node agents of a multi-node pool's GPU network, which the cluster component declares in kube-system
# (clouds/gke/fabric.py): Google's NCCL plugin installers and the NRI device injector, one DaemonSet per pool.
GPU_FABRIC_AGENTS = re.compile(r"(?:nccl-(?:tcpx|tcpxo|rdma)-installer|nri-device-injector)-"
                               r"(?P<pool>[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)")
# Namespaces of the platform's own node agents, which may read their host (device plugins, exporters), besides
# the stack's monitoring namespace (node-exporter, DCGM's exporter), which a stack may name (monitoring.namespace).
NODE_AGENT_NAMESPACES = frozenset({"kube-system", "nvidia-device-plugin", "gpu-operator"})
DEFAULT_MONITORING_NAMESPACE = "monitoring"
PLATFORM_AGENT_NAMESPACES = NODE_AGENT_NAMESPACES | {DEFAULT_MONITORING_NAMESPACE}
# Kubernetes minor versions the platform supports (the clouds' standard support, at the time of writing).
SUPPORTED_KUBERNETES = ("1.33", "1.36")
# EC2 instance families with NVIDIA GPUs.
GPU_INSTANCE_FAMILY = re.compile(r"^(p3|p3dn|p4d|p4de|p5|p5e|p5en|p6|g4dn|g5|g6|g6e|gr6)\.")
GPU_AMI_TYPES = frozenset({"AL2_x86_64_GPU", "AL2023_x86_64_NVIDIA", "AL2023_ARM_64_NVIDIA",
                           "BOTTLEROCKET_x86_64_NVIDIA", "BOTTLEROCKET_ARM_64_NVIDIA"})

Props = dict[str, Any]
HOST_ACCESS_RULE = "no-host-access-outside-platform-agents"


class _Unknown:
    """A value a preview cannot know yet."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()


@dataclass(frozen=True)
class Resource:
    """What a stack rule sees of each resource."""

    type: str
    urn: str
    props: Props


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    enforcement: str  # MANDATORY or ADVISORY, the default a stack's policy config may change


@dataclass(frozen=True)
class ResourceRule(Rule):
    check: Callable[[str, Props, str], list[str]]  # (type, props, stack) -> violations


@dataclass(frozen=True)
class StackRule(Rule):
    check: Callable[[list[Resource]], list[tuple[str, str]]]  # resources -> [(urn, violation)]


# ---- helpers ----------------------------------------------------------------------------------------------

def _get(tree: Any, *path: str | int) -> Any:
    """The value at path, None where it is absent, UNKNOWN where any step is unknown."""
    for step in path:
        if tree is UNKNOWN:
            return UNKNOWN
        if isinstance(step, int):
            tree = tree[step] if isinstance(tree, list) and step < len(tree) else None
        else:
            tree = tree.get(step) if isinstance(tree, dict) else None
    return tree


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _walk(tree: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    """Every (path, key, value) in a tree of dicts and lists."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            where = f"{path}.{key}" if path else str(key)
            yield where, str(key), value
            yield from _walk(value, where)
    elif isinstance(tree, list):
        for index, item in enumerate(tree):
            yield from _walk(item, f"{path}[{index}]")


def chart_name(props: Props) -> str:
    chart, version = props.get("chart"), props.get("version")
    if not isinstance(chart, str):
        return ""
    name = chart.rstrip("/").rsplit("/", 1)[-1]
    # A chart installed from a folder is named by it, as `helm pull --untar` names it: <name>-<version>.
    if isinstance(version, str) and version and name.endswith(f"-{version}"):
        return name.removesuffix(f"-{version}")
    return name


def is_prod(stack: str) -> bool:
    return "prod" in stack.split("-")


def pod_specs(resource_type: str, props: Props) -> Iterator[tuple[str, dict]]:
    """The pod spec a Kubernetes workload declares (Pod, the controllers' templates, CronJob), with its path."""
    if not resource_type.startswith("kubernetes:") or resource_type == HELM_RELEASE:
        return
    if props.get("kind") == "Pod":
        path: tuple[str, ...] = ("spec",)
    elif props.get("kind") == "CronJob":
        path = ("spec", "jobTemplate", "spec", "template", "spec")
    else:
        path = ("spec", "template", "spec")
    spec = _get(props, *path)
    if isinstance(spec, dict) and "containers" in spec:
        yield ".".join(path), spec


def _containers(spec: dict) -> Iterator[tuple[str, dict]]:
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for index, container in enumerate(_items(spec.get(field))):
            if isinstance(container, dict):
                yield f"{field}[{index}]", container


def _namespace(props: Props) -> Any:
    return _get(props, "metadata", "namespace")


# ---- GPU pools --------------------------------------------------------------------------------------------

def _has_gpu_taint(taints: Any, effect: str) -> bool | None:
    """Whether a list of taints holds the GPU taint; None when it cannot be known yet."""
    if taints is UNKNOWN:
        return None
    return any(isinstance(t, dict) and t.get("key") == GPU_TAINT_KEY and t.get("effect") == effect
               for t in _items(taints))


def _karpenter_offers_gpus(props: Props) -> bool:
    template = _get(props, "spec", "template", "spec")
    for requirement in _items(_get(template, "requirements")):
        if not isinstance(requirement, dict):
            continue
        key, values = requirement.get("key"), _items(requirement.get("values"))
        if key in ("karpenter.k8s.aws/instance-gpu-count", "karpenter.k8s.aws/instance-gpu-name",
                   "karpenter.k8s.aws/instance-gpu-manufacturer"):
            return True
        if key == "node.kubernetes.io/instance-type" and any(
                isinstance(v, str) and GPU_INSTANCE_FAMILY.match(v) for v in values):
            return True
        if key == "karpenter.k8s.aws/instance-family" and any(
                isinstance(v, str) and GPU_INSTANCE_FAMILY.match(f"{v}.") for v in values):
            return True
    return _get(props, "spec", "limits", GPU_RESOURCE) is not None


def _eks_node_group_offers_gpus(props: Props) -> bool:
    return props.get("amiType") in GPU_AMI_TYPES or any(
        isinstance(t, str) and GPU_INSTANCE_FAMILY.match(t) for t in _items(props.get("instanceTypes")))


def _gke_node_pool_offers_gpus(props: Props) -> bool:
    return bool(_items(_get(props, "nodeConfig", "guestAccelerators")))


def gpu_pools_are_tainted_and_bounded(resource_type: str, props: Props, stack: str) -> list[str]:
    violations = []
    if resource_type == KARPENTER_NODE_POOL and _karpenter_offers_gpus(props):
        tainted = _has_gpu_taint(_get(props, "spec", "template", "spec", "taints"), "NoSchedule")
        limit = _get(props, "spec", "limits", GPU_RESOURCE)
        bounded = limit is UNKNOWN or limit is not None
    elif resource_type == EKS_NODE_GROUP and _eks_node_group_offers_gpus(props):
        tainted = _has_gpu_taint(props.get("taints"), "NO_SCHEDULE")
        low, high = _get(props, "scalingConfig", "minSize"), _get(props, "scalingConfig", "maxSize")
        bounded = not (isinstance(low, (int, float)) and isinstance(high, (int, float)) and low > high)
    elif resource_type == GKE_NODE_POOL and _gke_node_pool_offers_gpus(props):
        tainted = _has_gpu_taint(_get(props, "nodeConfig", "taints"), "NO_SCHEDULE")
        autoscaling = props.get("autoscaling")
        low = _get(autoscaling, "totalMinNodeCount") or _get(autoscaling, "minNodeCount")
        high = _get(autoscaling, "totalMaxNodeCount") or _get(autoscaling, "maxNodeCount")
        bounded = autoscaling is UNKNOWN or (isinstance(autoscaling, dict) and not (
            isinstance(low, (int, float)) and isinstance(high, (int, float)) and low > high))
    else:
        return []
    if tainted is False:
        violations.append(f"a GPU pool without the taint {GPU_TAINT_KEY}={GPU_TAINT_VALUE}:NoSchedule: any pod "
                          "could land on its GPU nodes and hold them; add the taint")
    if not bounded:
        violations.append("a GPU pool without a bounded size: give it a nvidia.com/gpu limit (Karpenter) or "
                          "autoscaling with a minimum at most its maximum")
    return violations


def gpu_pools_scale_to_zero(resource_type: str, props: Props, stack: str) -> list[str]:
    idle = ("a GPU pool that keeps nodes when no pod needs them pays for idle GPUs: ")
    if resource_type == KARPENTER_NODE_POOL and _karpenter_offers_gpus(props):
        policy = _get(props, "spec", "disruption", "consolidationPolicy")
        after = _get(props, "spec", "disruption", "consolidateAfter")
        if after == "Never" or policy not in ("WhenEmpty", "WhenEmptyOrUnderutilized", UNKNOWN):
            return [idle + "set spec.disruption.consolidationPolicy and a consolidateAfter delay"]
    elif resource_type == EKS_NODE_GROUP and _eks_node_group_offers_gpus(props):
        low = _get(props, "scalingConfig", "minSize")
        if isinstance(low, (int, float)) and low > 0:
            return [idle + "set scalingConfig.minSize to 0"]
    elif resource_type == GKE_NODE_POOL and _gke_node_pool_offers_gpus(props):
        autoscaling = props.get("autoscaling")
        low = _get(autoscaling, "totalMinNodeCount") or _get(autoscaling, "minNodeCount")
        if autoscaling is None or (isinstance(low, (int, float)) and low > 0):
            return [idle + "enable autoscaling with a minimum of 0 nodes"]
    return []


# ---- workloads --------------------------------------------------------------------------------------------

def tolerates_gpu_taint(toleration: Any) -> bool:
    if not isinstance(toleration, dict):
        return False
    if toleration.get("effect") not in (None, "", "NoSchedule"):
        return False
    key, operator = toleration.get("key") or "", toleration.get("operator") or "Equal"
    if not key:
        return operator == "Exists"  # a toleration of every taint
    return key == GPU_TAINT_KEY and (operator == "Exists" or toleration.get("value") == GPU_TAINT_VALUE)


def gpu_fabric_agent_pool(props: Props) -> str | None:
    """The pool a GKE GPU network agent serves, by its name; None for any other object."""
    metadata = props.get("metadata") or {}
    if props.get("kind") != "DaemonSet" or metadata.get("namespace") != "kube-system":
        return None
    match = GPU_FABRIC_AGENTS.fullmatch(str(metadata.get("name") or ""))
    return match.group("pool") if match else None


def only_gpu_agents_tolerate_the_gpu_taint(resource_type: str, props: Props, stack: str = "") -> list[str]:
    if resource_type == HELM_RELEASE:
        if chart_name(props) in GPU_AGENT_CHARTS:
            return []
        tree, root = props.get("values"), "values"
    elif props.get("kind") == "ResourceFlavor":
        return []  # a Kueue flavor's tolerations are what admitted GPU workloads get to reach their pool
    elif gpu_fabric_agent_pool(props) is not None:
        return []
    elif resource_type.startswith("kubernetes:"):
        tree, root = props.get("spec"), "spec"
    else:
        return []
    return [f"{where}[{index}] tolerates the GPU taint {GPU_TAINT_KEY}={GPU_TAINT_VALUE}:NoSchedule: only per-node "
            f"GPU agents ({', '.join(sorted(GPU_AGENT_CHARTS))}, GKE's GPU network agents) may run on GPU nodes without requesting a GPU; "
            "remove the toleration, or request nvidia.com/gpu if this workload uses one"
            for where, key, value in _walk(tree, root) if key == "tolerations"
            for index, toleration in enumerate(_items(value)) if tolerates_gpu_taint(toleration)]


def _image_is_pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag not in ("", "latest")


def images_and_charts_are_pinned(resource_type: str, props: Props, stack: str) -> list[str]:
    violations = []
    if resource_type == HELM_RELEASE:
        version = props.get("version")
        if version is not UNKNOWN and (not isinstance(version, str) or not re.match(r"^v?\d+\.\d+\.\d+", version)):
            violations.append(f"the Helm release of {chart_name(props) or 'a chart'} has no pinned chart version "
                              f"({version!r}); set version to an exact release such as 1.2.3")
        for where, key, value in _walk(props.get("values"), "values"):
            if key == "tag" and value == "latest":
                violations.append(f"{where} is 'latest'; pin the image to a release tag or digest")
    for spec_path, spec in pod_specs(resource_type, props):
        for where, container in _containers(spec):
            image = container.get("image")
            if isinstance(image, str) and not _image_is_pinned(image):
                violations.append(f"{spec_path}.{where}.image {image!r} is not pinned: give it a release tag or "
                                  "digest, never latest")
    return violations


def no_host_access_outside(agent_namespaces: frozenset[str]) -> Callable[[str, Props, str], list[str]]:
    """The host-access rule for a stack whose node agents run in `agent_namespaces`."""
    agents = ", ".join(sorted(agent_namespaces))

    def check(resource_type: str, props: Props, stack: str) -> list[str]:
        namespace = _namespace(props)
        if namespace is UNKNOWN or namespace in agent_namespaces:
            return []
        violations = []
        for spec_path, spec in pod_specs(resource_type, props):
            for flag in ("hostNetwork", "hostPID", "hostIPC"):
                if spec.get(flag) is True:
                    violations.append(f"{spec_path}.{flag} is on")
            for index, volume in enumerate(_items(spec.get("volumes"))):
                if isinstance(volume, dict) and "hostPath" in volume:
                    violations.append(f"{spec_path}.volumes[{index}] mounts a hostPath")
            for where, container in _containers(spec):
                if _get(container, "securityContext", "privileged") is True:
                    violations.append(f"{spec_path}.{where} is privileged")
        return [f"{v}: only the platform's node agents, in {agents}, may reach into their node; run without it"
                for v in violations]

    return check


no_host_access_outside_platform_agents = no_host_access_outside(PLATFORM_AGENT_NAMESPACES)


_SECRET_KEY = re.compile(r"(^|[-_.])(password|passwd|secret|token|api[-_]?key|client[-_]?secret|secret[-_]?key|"
                         r"secret[-_]?access[-_]?key|private[-_]?key)$|(password|passwd|token|apikey|clientsecret|"
                         r"secretkey|privatekey)$", re.IGNORECASE)


def no_plaintext_secrets(resource_type: str, props: Props, stack: str) -> list[str]:
    """Secret-looking values belong in Secrets (encrypted in state), referenced by name, not written inline."""
    found: list[str] = []
    if resource_type == HELM_RELEASE:
        found = [where for where, key, value in _walk(props.get("values"), "values")
                 if _SECRET_KEY.search(key) and isinstance(value, str) and value]
    elif props.get("kind") == "ConfigMap":
        found = [where for where, key, value in _walk(props.get("data"), "data")
                 if _SECRET_KEY.search(key) and isinstance(value, str) and value]
    for spec_path, spec in pod_specs(resource_type, props):
        for where, container in _containers(spec):
            for index, env in enumerate(_items(container.get("env"))):
                if isinstance(env, dict) and _SECRET_KEY.search(str(env.get("name", ""))) and env.get("value"):
                    found.append(f"{spec_path}.{where}.env[{index}] ({env.get('name')})")
    return [f"{where} holds what looks like a secret in plain text: put it in a Kubernetes Secret (from secret "
            "stack config) and reference it (existingSecret, secretKeyRef)" for where in found]


# ---- clusters ---------------------------------------------------------------------------------------------

def _minor(version: Any) -> tuple[int, int] | None:
    match = re.match(r"^v?(\d+)\.(\d+)", version) if isinstance(version, str) else None
    return (int(match[1]), int(match[2])) if match else None


def kubernetes_version_is_supported(resource_type: str, props: Props, stack: str) -> list[str]:
    field = {EKS_CLUSTER: "version", GKE_CLUSTER: "minMasterVersion"}.get(resource_type)
    version = _minor(props.get(field)) if field else None
    low, high = (_minor(v) for v in SUPPORTED_KUBERNETES)
    assert low and high, f"SUPPORTED_KUBERNETES must name two minor versions, not {SUPPORTED_KUBERNETES}"
    if field is None or version is None or low <= version <= high:
        return []
    return [f"Kubernetes {props[field]} is outside the supported window {SUPPORTED_KUBERNETES[0]} to "
            f"{SUPPORTED_KUBERNETES[1]}: upgrade one minor version at a time"]


def open_to_world(cidrs: list[Any]) -> bool:
    """The CIDRs together cover every IPv4 address, however written (0.0.0.0/1 with 128.0.0.0/1 is the world);
    the same judgement as config's check_access_cidrs, which the pack cannot import (it has its own venv)."""
    networks = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr, strict=False))
        except (TypeError, ValueError):
            continue  # unknown during a preview, or not a CIDR (the cloud API refuses it itself)
    ipv4 = ipaddress.collapse_addresses(n for n in networks if isinstance(n, ipaddress.IPv4Network))
    return ipaddress.IPv4Network("0.0.0.0/0") in list(ipv4) or any(n.prefixlen == 0 for n in networks)


def eks_control_plane_is_hardened(resource_type: str, props: Props, stack: str) -> list[str]:
    if resource_type != EKS_CLUSTER:
        return []
    violations = []
    encryption = props.get("encryptionConfig")
    if encryption is not UNKNOWN and "secrets" not in _items(_get(encryption, "resources")):
        violations.append("Secrets are not encrypted with a KMS key: set encryptionConfig with resources [secrets]")
    logs = props.get("enabledClusterLogTypes")
    if logs is not UNKNOWN and not {"api", "audit", "authenticator"} <= set(_items(logs)):
        violations.append("control plane logging is off: enable at least the api, audit and authenticator logs")
    public = _get(props, "vpcConfig", "endpointPublicAccess")
    cidrs = _get(props, "vpcConfig", "publicAccessCidrs")
    if is_prod(stack) and public is not False and public is not UNKNOWN and cidrs is not UNKNOWN and (
            not _items(cidrs) or open_to_world(_items(cidrs))):
        violations.append("a prod cluster's API endpoint is open to the whole internet: make it private, or "
                          "list the CIDRs allowed to reach it in publicAccessCidrs")
    return violations


def gke_cluster_is_hardened(resource_type: str, props: Props, stack: str) -> list[str]:
    if resource_type != GKE_CLUSTER:
        return []
    violations = []
    pool = _get(props, "workloadIdentityConfig", "workloadPool")
    if pool is not UNKNOWN and not pool:
        violations.append("Workload Identity is off: set workloadIdentityConfig.workloadPool to <project>.svc.id.goog")
    if props.get("enableShieldedNodes") is False:
        violations.append("shielded nodes are off: set enableShieldedNodes")
    state = _get(props, "databaseEncryption", "state")
    if state is not UNKNOWN and state != "ENCRYPTED":
        violations.append("Secrets are not encrypted with a KMS key: set databaseEncryption (state ENCRYPTED, keyName)")
    private = _get(props, "privateClusterConfig", "enablePrivateNodes")
    if is_prod(stack) and private is not True and private is not UNKNOWN:
        violations.append("a prod cluster's nodes have public IPs: set privateClusterConfig.enablePrivateNodes")
    # No authorized networks at all leaves the IP endpoint open to every address, as does a world-wide list.
    authorized = props.get("masterAuthorizedNetworksConfig")
    blocks = [] if authorized is None else _get(authorized, "cidrBlocks")
    if is_prod(stack) and authorized is not UNKNOWN and blocks is not UNKNOWN and (
            authorized is None or open_to_world([_get(b, "cidrBlock") for b in _items(blocks)])):
        violations.append("a prod cluster's API endpoint is open to the whole internet: list the networks allowed "
                          "to reach it in masterAuthorizedNetworksConfig, or use the DNS-based endpoint with "
                          "authorized networks on and empty")
    return violations


# ---- the stack --------------------------------------------------------------------------------------------

def team_namespaces_have_guardrails(resources: list[Resource]) -> list[tuple[str, str]]:
    """Every team namespace has a GPU/CPU/memory quota, a LimitRange and a default-deny ingress policy."""
    # Indexed once: scanning every resource for each namespace took time quadratic in the teams.
    by_place: dict[tuple[str, str], list[Props]] = {}
    for r in resources:
        kind, namespace = r.props.get("kind"), _namespace(r.props)
        if isinstance(kind, str) and isinstance(namespace, str):
            by_place.setdefault((kind, namespace), []).append(r.props)

    def in_namespace(kind: str, namespace: str) -> list[Props]:
        return by_place.get((kind, namespace), [])

    violations = []
    for resource in resources:
        labels = _get(resource.props, "metadata", "labels")
        name = _get(resource.props, "metadata", "name")
        if resource.type != NAMESPACE or not isinstance(labels, dict) or TEAM_LABEL not in labels:
            continue
        if not isinstance(name, str):
            continue
        hard: dict = {}
        for quota in in_namespace("ResourceQuota", name):
            hard |= _get(quota, "spec", "hard") if isinstance(_get(quota, "spec", "hard"), dict) else {}
        missing = [what for what, keys in (("GPUs", {f"requests.{GPU_RESOURCE}"}),
                                           ("CPU", {"requests.cpu", "limits.cpu", "cpu"}),
                                           ("memory", {"requests.memory", "limits.memory", "memory"}))
                   if not keys & set(hard)]
        if missing:
            violations.append((resource.urn, f"team namespace {name} has no ResourceQuota on {', '.join(missing)}"))
        if not in_namespace("LimitRange", name):
            violations.append((resource.urn, f"team namespace {name} has no LimitRange with container defaults"))
        if not any(_get(p, "spec", "podSelector") == {} and "Ingress" in _items(_get(p, "spec", "policyTypes"))
                   and not _items(_get(p, "spec", "ingress")) for p in in_namespace("NetworkPolicy", name)):
            violations.append((resource.urn, f"team namespace {name} has no default-deny ingress NetworkPolicy"))
    return violations


RESOURCE_RULES: tuple[ResourceRule, ...] = (
    ResourceRule("gpu-pools-tainted-and-bounded",
                 "Every GPU pool carries the nvidia.com/gpu=present:NoSchedule taint and has a bounded size.",
                 MANDATORY, gpu_pools_are_tainted_and_bounded),
    ResourceRule("gpu-pools-scale-to-zero",
                 "GPU pools release idle nodes: no minimum above zero, and consolidation on.",
                 ADVISORY, gpu_pools_scale_to_zero),
    ResourceRule("only-gpu-agents-tolerate-gpu-taint",
                 "Only the platform's per-node GPU agents tolerate the nvidia.com/gpu taint, so that GPU nodes "
                 "run GPU work: remove other tolerations of it.",
                 MANDATORY, only_gpu_agents_tolerate_the_gpu_taint),
    ResourceRule("images-and-charts-pinned",
                 "Every container image has a release tag or digest (never latest) and every Helm release an "
                 "exact chart version.",
                 MANDATORY, images_and_charts_are_pinned),
    ResourceRule(HOST_ACCESS_RULE,
                 "No privileged container, host network, host PID/IPC or hostPath volume outside the platform's "
                 "agent namespaces.",
                 MANDATORY, no_host_access_outside_platform_agents),
    ResourceRule("no-plaintext-secrets",
                 "Passwords, tokens and keys live in Secrets from secret config, never inline in Helm values, "
                 "ConfigMaps or env.",
                 MANDATORY, no_plaintext_secrets),
    ResourceRule("kubernetes-version-supported",
                 f"Clusters run a Kubernetes minor version from {SUPPORTED_KUBERNETES[0]} to "
                 f"{SUPPORTED_KUBERNETES[1]}.",
                 MANDATORY, kubernetes_version_is_supported),
    ResourceRule("eks-control-plane-hardened",
                 "EKS: Secrets encrypted with KMS, control plane logging on, no prod API endpoint open to the world.",
                 MANDATORY, eks_control_plane_is_hardened),
    ResourceRule("gke-cluster-hardened",
                 "GKE: Workload Identity, shielded nodes, Secrets encrypted with KMS, and private nodes in prod.",
                 MANDATORY, gke_cluster_is_hardened),
)



def resource_rules(monitoring_namespace: str = DEFAULT_MONITORING_NAMESPACE) -> tuple[ResourceRule, ...]:
    """The resource rules for a stack whose monitoring runs in `monitoring_namespace`: its node exporters are
    platform agents wherever the stack puts them. (A CrossGuard preview sees Helm releases, not the workloads
    they render, so the pack's default matters only for workloads a stack declares itself.)"""
    if monitoring_namespace == DEFAULT_MONITORING_NAMESPACE:
        return RESOURCE_RULES
    check = no_host_access_outside(NODE_AGENT_NAMESPACES | {monitoring_namespace})
    return tuple(ResourceRule(r.name, r.description, r.enforcement, check) if r.name == HOST_ACCESS_RULE else r
                 for r in RESOURCE_RULES)


STACK_RULES: tuple[StackRule, ...] = (
    StackRule("team-namespaces-have-guardrails",
              "Every team namespace has a ResourceQuota on GPUs, CPU and memory, a LimitRange and a default-deny "
              "ingress NetworkPolicy.",
              MANDATORY, team_namespaces_have_guardrails),
)
