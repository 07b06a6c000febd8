"""Every Kubernetes version, chart version and image the platform installs, pinned in one place.

A bump is a reviewed change of its own: it replaces nodes or upgrades controllers on real clusters.
"""

from __future__ import annotations

from dataclasses import dataclass

# Kubernetes minor version of every cluster the platform creates; manifests are validated against it.
KUBERNETES_VERSION = "1.34"
# The minor versions the platform supports: the clouds' standard support window, at the time of writing.
SUPPORTED_KUBERNETES = ("1.33", "1.36")

# kind v0.30.0 publishes this node image for Kubernetes 1.34; the digest pins it against re-tags.
KIND_NODE_IMAGE = (
    "kindest/node:v1.34.0@sha256:7416a61b42b1662ca6ca89f02028ac133a309a2a30ba309614e8ec94d976dc5a"
)
# The kind CLI release that built KIND_NODE_IMAGE: older releases cannot boot it.
KIND_CLI_VERSION = "v0.30.0"

@dataclass(frozen=True)
class Chart:
    """A Helm chart at a pinned version: what a Release installs and what the synth renders offline.

    `name` is the chart's own name (its Chart.yaml), `repository` an https chart repository or an `oci://`
    registry path, `digest` the published package's sha256 where it is known.
    """

    name: str
    repository: str
    version: str
    digest: str | None = None

    @property
    def is_oci(self) -> bool:
        return self.repository.startswith("oci://")


# NVIDIA's device plugin, for clouds whose nodes have drivers but no plugin (EKS accelerated AMIs, existing
# clusters).
NVIDIA_DEVICE_PLUGIN = Chart("nvidia-device-plugin", "https://nvidia.github.io/k8s-device-plugin", "0.20.0")
# Run:ai's fake GPU operator: simulated GPUs and GPU metrics on kind, where there are no GPUs.
FAKE_GPU_OPERATOR = Chart("fake-gpu-operator", "oci://ghcr.io/run-ai/fake-gpu-operator", "0.2.0")
# Prometheus, Alertmanager, Grafana, kube-state-metrics and node-exporter (prometheus-community).
KUBE_PROMETHEUS_STACK = Chart("kube-prometheus-stack", "https://prometheus-community.github.io/helm-charts",
                              "88.5.3")
# NVIDIA's DCGM exporter: per-GPU metrics on nodes with real GPUs.
DCGM_EXPORTER = Chart("dcgm-exporter", "https://nvidia.github.io/dcgm-exporter/helm-charts", "4.8.2")
# Karpenter (aws/karpenter-provider-aws): GPU nodes from zero on EKS.
KARPENTER = Chart("karpenter", "oci://public.ecr.aws/karpenter", "1.14.1")
# Karpenter's CRDs as templates, at the controller's version: Helm never upgrades a chart's crds/ folder, so
# Karpenter's upgrade guide installs them with this chart, before the controller.
KARPENTER_CRD = Chart("karpenter-crd", "oci://public.ecr.aws/karpenter", KARPENTER.version)
# AWS's EFA device plugin (aws/eks-charts, stable/aws-efa-k8s-device-plugin): advertises vpc.amazonaws.com/efa
# on the nodes of EFA pools; the EKS accelerated AMI has the EFA driver but not the plugin.
EFA_DEVICE_PLUGIN = Chart("aws-efa-k8s-device-plugin", "https://aws.github.io/eks-charts", "v0.5.30")
# Kueue (kubernetes-sigs/kueue): job queueing and fair sharing of GPUs between teams.
KUEUE = Chart("kueue", "oci://registry.k8s.io/kueue/charts", "0.19.2")
KUEUE_IMAGE = "registry.k8s.io/kueue/kueue"
KUEUE_IMAGE_TAG = "v0.19.2"

# Every chart any stack may install, for the offline renderer and the pin checks.
CHARTS: tuple[Chart, ...] = (NVIDIA_DEVICE_PLUGIN, FAKE_GPU_OPERATOR, KUBE_PROMETHEUS_STACK, DCGM_EXPORTER,
                             KARPENTER, KARPENTER_CRD, EFA_DEVICE_PLUGIN, KUEUE)

# The image of `make verify`'s GPU pod: CUDA's smallest (base) image; nvidia-smi comes from the node's driver.
VERIFY_IMAGE = "nvcr.io/nvidia/cuda:12.9.1-base-ubuntu24.04"

# The pod ports on which the API server calls each chart's admission webhooks and aggregated APIs, at the pins
# above. A private cluster's control plane reaches nodes only on the ports a firewall opens (GKE opens 443 and
# 10250), so the GKE cluster opens these; tests check them against the charts' webhook Services.
WEBHOOK_PORTS: dict[str, tuple[int, ...]] = {
    KUEUE.name: (9443, 8082),  # the webhook server, and the visibility API's APIService
    KUBE_PROMETHEUS_STACK.name: (10250,),  # prometheus-operator's admission webhook, served by the operator
}

# EKS managed add-ons per Kubernetes minor version: each add-on release is built for (and offered on) the
# minors `aws eks describe-addon-versions --kubernetes-version` lists, so a cluster may only run a minor
# with an entry here (config refuses the others). Add a minor's entry before moving a cluster to it.
EKS_ADDON_VERSIONS: dict[str, dict[str, str]] = {
    "1.34": {
        "vpc-cni": "v1.21.1-eksbuild.1",
        "coredns": "v1.12.4-eksbuild.1",
        "kube-proxy": "v1.34.1-eksbuild.2",
        "eks-pod-identity-agent": "v1.3.10-eksbuild.2",
        "aws-ebs-csi-driver": "v1.54.0-eksbuild.1",
    },
}
# Amazon Linux 2023 EKS-optimized AMIs of one dated release; Karpenter picks the NVIDIA variant for GPU
# instances. Dated, not @latest: a new AMI would otherwise roll every GPU node unannounced.
EKS_AMI_ALIAS = "al2023@v20260903"
EKS_SYSTEM_AMI_TYPE = "AL2023_x86_64_STANDARD"
# The system node group's AMI release per Kubernetes minor (`<kubelet>-<date>`, as amazon-eks-ami's CHANGELOG
# lists it for AL2023_x86_64_STANDARD), so that it too changes only in a reviewed bump. v20260714 is the newest
# release whose 1.34 release version could be read from that CHANGELOG; bump it with EKS_AMI_ALIAS.
EKS_SYSTEM_AMI_RELEASES: dict[str, str] = {"1.34": "1.34.9-20260714"}
