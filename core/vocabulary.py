"""Every name the platform shares between its parts: node labels and taints, resource names, namespaces,
priority classes and API groups. One home, so that a component, a cloud, the synth, `make verify` and the
policy pack's pinned copies (tests/test_policies.py) can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

# Node labels every GPU pool carries on every cloud, so that workloads and agents select pools the same way.
POOL_LABEL = "mlplatform.io/pool"
ACCELERATOR_LABEL = "mlplatform.io/accelerator"
GPU_PRESENT_LABEL = "nvidia.com/gpu.present"
# NVIDIA's device plugin picks its per-node config by this label; we name each pool's config after the pool.
DEVICE_PLUGIN_CONFIG_LABEL = "nvidia.com/device-plugin.config"

SYSTEM_POOL = "system"


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str

    def __str__(self) -> str:
        return f"{self.key}={self.value}:{self.effect}"

    @property
    def cloud_effect(self) -> str:
        """The effect as EKS's and GKE's node pool APIs spell it: NO_SCHEDULE, PREFER_NO_SCHEDULE, NO_EXECUTE."""
        return {"NoSchedule": "NO_SCHEDULE", "PreferNoSchedule": "PREFER_NO_SCHEDULE",
                "NoExecute": "NO_EXECUTE"}[self.effect]

    def toleration(self) -> dict[str, str]:
        """The pod toleration that matches exactly this taint."""
        return {"key": self.key, "operator": "Equal", "value": self.value, "effect": self.effect}


# The taint of every GPU node: only pods that ask for a GPU pool (and per-node GPU agents) land there.
GPU_TAINT = Taint(key="nvidia.com/gpu", value="present", effect="NoSchedule")

# The taint of the system pool's nodes: only the platform's controllers and the cluster's own add-ons run there,
# never team work, which goes to the untainted CPU pool. The key is the one those add-ons already tolerate
# (kubeadm's and EKS's CoreDNS, GKE's kube-dns and konnectivity agents from Kubernetes' addon manifests, the EBS
# CSI controller, Karpenter's chart), and the taint EKS Auto Mode's own `system` NodePool carries.
SYSTEM_TAINT = Taint(key="CriticalAddonsOnly", value="true", effect="NoSchedule")
# The pool of untainted general-purpose nodes where teams' CPU work runs (and whatever cluster add-on does not
# tolerate the system pool's taint).
CPU_POOL = "cpu"

# Kueue's flavor of a time-sliced pool whose shares are plain nvidia.com/gpu carries this taint (in the
# ResourceFlavor only; the nodes do not have it): Kueue assigns that flavor only to pods that tolerate it, so a pod
# opts in to shared GPUs, and a pod of several GPUs, which the device plugin would refuse there, never lands on one.
SHARED_GPU_TAINT = Taint(key="mlplatform.io/gpu-sharing", value="time-slicing", effect="NoSchedule")

# The fake GPU operator runs its device plugin and metrics exporter only on nodes labelled so.
SIMULATED_GPU_NODE_LABELS = {"nvidia.com/gpu.deploy.device-plugin": "true",
                             "nvidia.com/gpu.deploy.dcgm-exporter": "true"}

PLATFORM_LABEL = "mlplatform.io/component"
# Kubernetes' own priority classes for agents on every node and for cluster-wide controllers.
SYSTEM_NODE_CRITICAL = "system-node-critical"
SYSTEM_CLUSTER_CRITICAL = "system-cluster-critical"

TEAM_LABEL = "mlplatform.io/team"

# Kueue gives a job without a queue name the namespace's LocalQueue of this name (Kueue's default LocalQueue).
DEFAULT_LOCAL_QUEUE = "default"

GPU_RESOURCE = "nvidia.com/gpu"
# What NVIDIA's device plugin advertises time-sliced shares as, with renameByDefault.
SHARED_GPU_RESOURCE = "nvidia.com/gpu.shared"

DEVICE_PLUGIN_NAMESPACE = "nvidia-device-plugin"
FAKE_GPU_NAMESPACE = "gpu-operator"
KUEUE_NAMESPACE = "kueue-system"
# The ServiceAccount Kueue's controller runs as: `<fullname>-controller-manager` in the Kueue chart
# (templates/manager/manager.yaml), its fullname being "kueue" for the release "kueue".
KUEUE_SERVICE_ACCOUNT = "kueue-controller-manager"
JOBSET_NAMESPACE = "jobset-system"
JOBSET_GROUP = "jobset.x-k8s.io"
PLATFORM_NAMESPACES = (DEVICE_PLUGIN_NAMESPACE, FAKE_GPU_NAMESPACE, KUEUE_NAMESPACE, JOBSET_NAMESPACE)

KUEUE_API = "kueue.x-k8s.io/v1beta2"
# The Kueue Cohort above every team cohort: it holds the GPUs no team is guaranteed, which every team borrows.
ROOT_COHORT = "mlplatform"
# What every GPU of every pool (a whole GPU, a time-sliced share, a MIG slice) also counts as in Kueue, through a
# resource transformation: one ceiling per team over all its pools, whatever resource each pool advertises.
GPU_UNITS_RESOURCE = "mlplatform.io/gpu-units"

@dataclass(frozen=True)
class MlPriorityClass:
    name: str
    value: int
    preemption_policy: str
    description: str


# Serving preempts training, training preempts best-effort work, and best-effort work never preempts.
ML_PRIORITY_CLASSES = (
    MlPriorityClass("ml-serving", 100_000, "PreemptLowerPriority",
                    "Online inference: may preempt training when GPUs run short."),
    MlPriorityClass("ml-training", 10_000, "PreemptLowerPriority",
                    "Training and fine-tuning that should not be interrupted lightly; may preempt best-effort work."),
    MlPriorityClass("ml-training-preemptible", 1_000, "Never",
                    "Best-effort training (sweeps, experiments): waits for capacity and is preempted first."),
)

EFA_LABEL = "mlplatform.io/efa"
# The EFA interfaces AWS's EFA device plugin advertises on a node, and a pod asks for.
EFA_RESOURCE = "vpc.amazonaws.com/efa"
# The 2 MiB huge pages a node reserves and advertises (the kubelet reports each pre-allocated size so), and a pod
# asks for in requests and limits alike.
HUGE_PAGE_RESOURCE = "hugepages-2Mi"

# The labels of Prometheus's own pods, which the Prometheus operator sets (kube-prometheus-stack selects them so
# for its Service and PodDisruptionBudget): in the monitoring namespace, only Prometheus scrapes team pods.
PROMETHEUS_POD_LABELS = {"app.kubernetes.io/name": "prometheus"}
# Multi-node work: the node label every node carries, the lowest level of every Kueue Topology (Kueue's TAS docs:
# taints are respected only when the lowest level is the node's hostname), and the name of the Topology that the
# ResourceFlavors of multi-node pools name.
HOSTNAME_LABEL = "kubernetes.io/hostname"
KUEUE_TOPOLOGY = "network"
# What a multi-node job's pod template says to Kueue (kueue.x-k8s.io annotations at v0.19): all its pods in one
# domain of this level, or as close as they fit.
REQUIRED_TOPOLOGY = "kueue.x-k8s.io/podset-required-topology"
PREFERRED_TOPOLOGY = "kueue.x-k8s.io/podset-preferred-topology"
UNCONSTRAINED_TOPOLOGY = "kueue.x-k8s.io/podset-unconstrained-topology"

# The namespace monitoring goes to unless a stack names another (monitoring.namespace).
DEFAULT_MONITORING_NAMESPACE = "monitoring"
# Where the platform's node agents run besides monitoring, which may reach into their node.
KUBE_SYSTEM_NAMESPACE = "kube-system"
