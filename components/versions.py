"""Every Kubernetes version, chart version and image the platform installs, pinned in one place.

A bump is a reviewed change of its own: it replaces nodes or upgrades controllers on real clusters.
"""

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

# NVIDIA's device plugin (https://nvidia.github.io/k8s-device-plugin), for clouds whose nodes have drivers
# but no plugin (EKS accelerated AMIs, existing clusters).
NVIDIA_DEVICE_PLUGIN_CHART = "nvidia-device-plugin"
NVIDIA_DEVICE_PLUGIN_REPO = "https://nvidia.github.io/k8s-device-plugin"
NVIDIA_DEVICE_PLUGIN_VERSION = "0.20.0"

# Run:ai's fake GPU operator: simulated GPUs and GPU metrics on kind, where there are no GPUs.
FAKE_GPU_OPERATOR_CHART = "oci://ghcr.io/run-ai/fake-gpu-operator/fake-gpu-operator"
FAKE_GPU_OPERATOR_VERSION = "0.2.0"

# Prometheus, Alertmanager, Grafana, kube-state-metrics and node-exporter (prometheus-community).
KUBE_PROMETHEUS_STACK_CHART = "kube-prometheus-stack"
KUBE_PROMETHEUS_STACK_REPO = "https://prometheus-community.github.io/helm-charts"
KUBE_PROMETHEUS_STACK_VERSION = "88.5.3"

# NVIDIA's DCGM exporter: per-GPU metrics on nodes with real GPUs.
DCGM_EXPORTER_CHART = "dcgm-exporter"
DCGM_EXPORTER_REPO = "https://nvidia.github.io/dcgm-exporter/helm-charts"
DCGM_EXPORTER_VERSION = "4.8.2"

# EKS managed add-ons for KUBERNETES_VERSION: each release is built for a Kubernetes minor version.
EKS_ADDON_VERSIONS = {
    "vpc-cni": "v1.21.1-eksbuild.1",
    "coredns": "v1.12.4-eksbuild.1",
    "kube-proxy": "v1.34.1-eksbuild.2",
    "eks-pod-identity-agent": "v1.3.10-eksbuild.2",
    "aws-ebs-csi-driver": "v1.54.0-eksbuild.1",
}
# Amazon Linux 2023 EKS-optimized AMIs of one dated release; Karpenter picks the NVIDIA variant for GPU
# instances. Dated, not @latest: a new AMI would otherwise roll every GPU node unannounced.
EKS_AMI_ALIAS = "al2023@v20260903"
EKS_SYSTEM_AMI_TYPE = "AL2023_x86_64_STANDARD"

# Karpenter (aws/karpenter-provider-aws), whose chart brings its NodePool and EC2NodeClass CRDs.
KARPENTER_CHART = "oci://public.ecr.aws/karpenter/karpenter"
KARPENTER_VERSION = "1.14.1"

# Kueue (kubernetes-sigs/kueue): job queueing and fair sharing of GPUs between teams.
KUEUE_CHART = "oci://registry.k8s.io/kueue/charts/kueue"
KUEUE_VERSION = "0.19.2"
KUEUE_IMAGE = "registry.k8s.io/kueue/kueue"
KUEUE_IMAGE_TAG = "v0.19.2"
