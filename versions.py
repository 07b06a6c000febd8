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
# The EFA device plugin's image is in EKS's own ECR, replicated to a registry per region, owned by one of
# these accounts: the chart's default (us-west-2's) would be pulled across regions, through NAT, and not at all
# from an opt-in region or another partition. Region -> account, as amazon-eks-ami mapped them for its nodes'
# images (awslabs/amazon-eks-ami 0ab8428, templates/al2/runtime/get-ecr-uri.sh, its last version before AL2
# support was removed; EKS User Guide, "View Amazon container image registries for Amazon EKS add-ons").
# Regions whose accounts are not listed (new regions, ISO partitions) are refused for EFA pools.
_EKS_ECR_MAIN_ACCOUNT = "602401143452"
EKS_ECR_ACCOUNTS: dict[str, str] = {
    **{region: _EKS_ECR_MAIN_ACCOUNT for region in (
        "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "ap-south-1", "ap-southeast-1", "ap-southeast-2",
        "ca-central-1", "eu-central-1", "eu-north-1", "eu-west-1", "eu-west-2", "eu-west-3", "sa-east-1",
        "us-east-1", "us-east-2", "us-west-1", "us-west-2")},
    "af-south-1": "877085696533", "ap-east-1": "800184023465", "ap-east-2": "533267051163",
    "ap-south-2": "900889452093", "ap-southeast-3": "296578399912", "ap-southeast-4": "491585149902",
    "ap-southeast-5": "151610086707", "ap-southeast-6": "333609536671", "ap-southeast-7": "121268973566",
    "ca-west-1": "761377655185", "eu-central-2": "900612956339", "eu-south-1": "590381155156",
    "eu-south-2": "455263428931", "il-central-1": "066635153087", "me-central-1": "759879836304",
    "me-south-1": "558608220178", "mx-central-1": "730335286997",
    "cn-north-1": "918309763551", "cn-northwest-1": "961992271922",
    "us-gov-east-1": "151742754352", "us-gov-west-1": "013241004608",
}


# Kueue (kubernetes-sigs/kueue): job queueing and fair sharing of GPUs between teams.
KUEUE = Chart("kueue", "oci://registry.k8s.io/kueue/charts", "0.19.2")
KUEUE_IMAGE = "registry.k8s.io/kueue/kueue"
KUEUE_IMAGE_TAG = "v0.19.2"
# JobSet (kubernetes-sigs/jobset): a group of Jobs started together, the shape of a multi-node training run;
# Kueue admits a JobSet as one gang. The image is the chart's appVersion.
JOBSET = Chart("jobset", "oci://registry.k8s.io/jobset/charts", "0.12.0")
JOBSET_IMAGE = "registry.k8s.io/jobset/jobset"
JOBSET_IMAGE_TAG = "v0.12.0"

# Every chart any stack may install, for the offline renderer and the pin checks.
CHARTS: tuple[Chart, ...] = (NVIDIA_DEVICE_PLUGIN, FAKE_GPU_OPERATOR, KUBE_PROMETHEUS_STACK, DCGM_EXPORTER,
                             KARPENTER, KARPENTER_CRD, EFA_DEVICE_PLUGIN, KUEUE, JOBSET)

# GKE's NCCL plugins for the GPU networks of A3 and A4 machines, and what they run beside, as Google's manifests install
# them (GoogleCloudPlatform/container-engine-accelerators at commit 992db81257553607f1477945f1b3219632991829:
# gpudirect-tcpx/nccl-tcpx-installer.yaml, gpudirect-tcpxo/nccl-tcpxo-installer.yaml and README.md "Jan 9,
# 2026", gpudirect-rdma/nccl-rdma-installer.yaml, nri_device_injector/nri-device-injector.yaml). The daemons are
# the sidecars a team's TCPX or TCPXO pod runs (their nccl-test-latest.yaml), of the plugin's release. The TCPX
# and TCPXO installer images are also the images of Google's own NCCL tests there (the nccl-test container of
# gpudirect-tcpx/ and gpudirect-tcpxo/nccl-test-latest.yaml): nccl-tests with MPI, Open MPI, sshd.
GPUDIRECT_TCPX_INSTALLER_IMAGE = "us-docker.pkg.dev/gce-ai-infra/gpudirect-tcpx/nccl-plugin-gpudirecttcpx-dev:v3.1.9"
GPUDIRECT_TCPX_DAEMON_IMAGE = "us-docker.pkg.dev/gce-ai-infra/gpudirect-tcpx/tcpgpudmarxd-dev:v2.0.12"
GPUDIRECT_TCPXO_INSTALLER_IMAGE = ("us-docker.pkg.dev/gce-ai-infra/gpudirect-tcpxo/nccl-plugin-gpudirecttcpx-dev"
                                   ":v1.0.15")
GPUDIRECT_TCPXO_DAEMON_IMAGE = "us-docker.pkg.dev/gce-ai-infra/gpudirect-tcpxo/tcpgpudmarxd-dev:v1.0.21"
GPUDIRECT_RDMA_INSTALLER_IMAGE = "us-docker.pkg.dev/gce-ai-infra/gpudirect-gib/nccl-plugin-gib:v1.1.1"
# Google's NCCL test image for RDMA (A3 Ultra, A4) at the same commit and gIB release (gpudirect-rdma/
# nccl-test.yaml): nccl-tests with MPI at /third_party/nccl-tests/build, Open MPI, sshd.
GPUDIRECT_RDMA_TEST_IMAGE = "us-docker.pkg.dev/gce-ai-infra/gpudirect-gib/nccl-plugin-gib-diagnostic:v1.1.1"
NRI_DEVICE_INJECTOR_IMAGE = ("gcr.io/gke-release/nri-device-injector"
                             "@sha256:6e79483d52abdc28454bf186320b10a56b0f117a10e8d65d5c74dbb821a76970")
GKE_PAUSE_IMAGE = "gke.gcr.io/pause:3.8@sha256:880e63f94b145e46f1b1082bb71b85e21f16b99b180b9996407d61240ceb9830"
# The TCPXO installer's first step runs on the host (nsenter into PID 1's namespaces); its image only carries
# nsenter. Google's manifest names an unversioned "ubuntu": pinned here to a release.
GPUDIRECT_TCPXO_PREINSTALL_IMAGE = "ubuntu:24.04"

# The image of `make verify`'s GPU pod: CUDA's smallest (base) image; nvidia-smi comes from the node's driver.
VERIFY_IMAGE = "nvcr.io/nvidia/cuda:12.9.1-base-ubuntu24.04"
# The image of `make verify`'s NCCL check: AWS's nccl-tests image (aws-samples/awsome-distributed-training,
# micro-benchmarks/nccl-tests/nccl-tests.Dockerfile), published on public ECR by exact tag: CUDA 12.8.1, the EFA
# installer 1.43.2 (libfabric, Open MPI 4 at /opt/amazon/openmpi), aws-ofi-nccl 1.16.3, NCCL 2.27.7 and
# nccl-tests 2.16.9 built with MPI (/opt/nccl-tests/build), openssh-server. Off EFA, aws-ofi-nccl finds no
# device and NCCL uses its own transports, so a pool without a fabric of a plugin's own runs it too; GKE's
# GPUDirect pools run Google's test images above, built for their plugins.
NCCL_TESTS_IMAGE = "public.ecr.aws/hpc-cloud/nccl-tests:cuda12.8.1-efa1.43.2-ofiv1.16.3-ncclv2.27.7-1-testsv2.16.9"

# EKS managed add-ons per Kubernetes minor version: each add-on release is built for (and offered on) the
# minors `aws eks describe-addon-versions --kubernetes-version` lists, so a cluster may only run a minor
# with an entry here (config refuses the others). Add a minor's entry before moving a cluster to it.
# kube-proxy and CoreDNS for 1.35 and 1.36: the EKS User Guide's tables of the latest add-on per minor
# ("Manage kube-proxy", "Manage CoreDNS"). vpc-cni, the Pod Identity agent and the EBS CSI driver are not
# built per minor; their 1.34 releases are carried to 1.35 and 1.36 unverified: `describe-addon-versions`
# must list them for those minors before a cluster moves (docs/aws.md, "Upgrading Kubernetes on EKS").
_MINOR_BLIND_ADDONS = {
    "vpc-cni": "v1.21.1-eksbuild.1",
    "eks-pod-identity-agent": "v1.3.10-eksbuild.2",
    "aws-ebs-csi-driver": "v1.54.0-eksbuild.1",
}
EKS_ADDON_VERSIONS: dict[str, dict[str, str]] = {
    "1.34": {"coredns": "v1.12.4-eksbuild.1", "kube-proxy": "v1.34.1-eksbuild.2", **_MINOR_BLIND_ADDONS},
    "1.35": {"coredns": "v1.14.3-eksbuild.3", "kube-proxy": "v1.35.3-eksbuild.13", **_MINOR_BLIND_ADDONS},
    "1.36": {"coredns": "v1.14.3-eksbuild.3", "kube-proxy": "v1.36.0-eksbuild.14", **_MINOR_BLIND_ADDONS},
}
# Amazon Linux 2023 EKS-optimized AMIs of one dated release; Karpenter picks the NVIDIA variant for GPU
# instances. Dated, not @latest: a new AMI would otherwise roll every GPU node unannounced.
EKS_AMI_ALIAS = "al2023@v20260903"
EKS_SYSTEM_AMI_TYPE = "AL2023_x86_64_STANDARD"
# The system node group's AMI release per Kubernetes minor (`<kubelet>-<date>`, as amazon-eks-ami's CHANGELOG
# lists it for AL2023_x86_64_STANDARD), so that it too changes only in a reviewed bump. v20260714 is the newest
# release whose release versions could be read from that CHANGELOG (1.34.9, 1.35.6, 1.36.2); bump it with
# EKS_AMI_ALIAS.
EKS_SYSTEM_AMI_RELEASES: dict[str, str] = {"1.34": "1.34.9-20260714", "1.35": "1.35.6-20260714",
                                           "1.36": "1.36.2-20260714"}
# The minor a new EKS cluster runs: the newest one pinned above. Kubernetes 1.34 leaves EKS standard support
# on 2 Dec 2026, after which EKS upgrades such clusters itself.
EKS_KUBERNETES_VERSION = "1.36"


# The tools of `make e2e`, each built from its Go module (no release downloads reach this project's machines)
# into ~/.cache/mlplatform/e2e/bin/<name>-<version>/ by e2e/tools.py, only when missing or when its pin or its
# wrapper module changes. `wrapper` names a folder under e2e/tools/ whose go.mod requires `module` at `version`
# (for modules whose own go.mod has replace directives, which `go install module@version` refuses); without
# one, the tool is `go install`ed as it is.
@dataclass(frozen=True)
class GoTool:
    name: str
    module: str
    version: str
    package: str
    wrapper: str | None = None
    # Linker flags, for version strings set with -X that a plain `go build` leaves as placeholders.
    ldflags: str = ""


# The e2e cluster: the newest 1.34 patch the Go module proxy serves; a bump also rewrites the staging modules'
# versions in e2e/tools/kubernetes/go.mod (v0.34.4 for v1.34.4; its header says how). Built
# without Kubernetes' own build scripts, the binaries would report v0.0.0-master, which version checks (Helm's
# kubeVersion, clients' discovery) refuse; the -X flags set what `make release` would.
E2E_KUBERNETES = "v1.34.4"
_E2E_KUBE_LDFLAGS = " ".join(
    f"-X k8s.io/{pkg}.{var}={value}"
    for pkg in ("component-base/version", "client-go/pkg/version")
    for var, value in (("gitVersion", E2E_KUBERNETES), ("gitMajor", KUBERNETES_VERSION.split(".")[0]),
                       ("gitMinor", KUBERNETES_VERSION.split(".")[1]), ("gitTreeState", "clean")))

# Prometheus v3.14.0 is module v0.314.0 (Prometheus tags its Go module v0.<major><minor>.<patch>).
_E2E_PROMETHEUS = "v0.314.0"
_E2E_PROMETHEUS_LDFLAGS = "-X github.com/prometheus/common/version.Version=3.14.0"

E2E_TOOLS: tuple[GoTool, ...] = (
    # Wrapper e2e/tools/kubernetes: k8s.io/kubernetes's go.mod replaces its staging modules with local paths.
    GoTool("kube-apiserver", "k8s.io/kubernetes", E2E_KUBERNETES, "k8s.io/kubernetes/cmd/kube-apiserver",
           "kubernetes", _E2E_KUBE_LDFLAGS),
    GoTool("kube-controller-manager", "k8s.io/kubernetes", E2E_KUBERNETES,
           "k8s.io/kubernetes/cmd/kube-controller-manager", "kubernetes", _E2E_KUBE_LDFLAGS),
    GoTool("kube-scheduler", "k8s.io/kubernetes", E2E_KUBERNETES, "k8s.io/kubernetes/cmd/kube-scheduler",
           "kubernetes", _E2E_KUBE_LDFLAGS),
    # The etcd server is the main package at the root of go.etcd.io/etcd/server/v3 (the root module
    # go.etcd.io/etcd/v3 stops at v3.6.8 on the proxy); newest 3.6 patch. Wrapper: its go.mod has replaces.
    GoTool("etcd", "go.etcd.io/etcd/server/v3", "v3.6.17", "go.etcd.io/etcd/server/v3", "etcd"),
    # Newest kwok release: fakes the kubelets of the GPU nodes (nodes Ready, bound pods Running).
    GoTool("kwok", "sigs.k8s.io/kwok", "v0.8.0", "sigs.k8s.io/kwok/cmd/kwok"),
    # The controller manager of the Kueue chart's release (KUEUE above), run as a process beside the cluster.
    GoTool("kueue", "sigs.k8s.io/kueue", KUEUE_IMAGE_TAG, "sigs.k8s.io/kueue/cmd/kueue",
           ldflags=f"-X sigs.k8s.io/kueue/pkg/version.GitVersion={KUEUE_IMAGE_TAG}"),
    # The controller manager of the JobSet chart's release (JOBSET above), run as a process beside the cluster: the
    # main package at the module's root. Wrapper: `go install` of it needs the proxy's version list of the module
    # (its deprecation check), which the proxy refuses for sigs.k8s.io/jobset; and it requires the modules JobSet
    # shares with Kueue at Kueue's versions, so that both are built from one set of compiled packages.
    GoTool("jobset", "sigs.k8s.io/jobset", JOBSET_IMAGE_TAG, "sigs.k8s.io/jobset", "jobset",
           ldflags=f"-X sigs.k8s.io/jobset/pkg/version.GitVersion={JOBSET_IMAGE_TAG}"),
    # promtool of the Prometheus that kube-prometheus-stack 88.5.3 deploys (v3.14.0 = module v0.314.0), and that
    # Prometheus server itself for make test's scrape test (tests/test_gpu_scrape.py). Wrapper: Prometheus's go.mod
    # has replace and exclude directives. The server is built without the `builtinassets` tag, so without its web
    # UI (which would need Node to build): the UI is read from disk at run time and only the API is used here.
    GoTool("promtool", "github.com/prometheus/prometheus", _E2E_PROMETHEUS,
           "github.com/prometheus/prometheus/cmd/promtool", "prometheus", _E2E_PROMETHEUS_LDFLAGS),
    GoTool("prometheus", "github.com/prometheus/prometheus", _E2E_PROMETHEUS,
           "github.com/prometheus/prometheus/cmd/prometheus", "prometheus", _E2E_PROMETHEUS_LDFLAGS),
    # The Pulumi CLI at v3.260.0: the newest release that both PyPI (the SDK) and the Go module proxy (pkg/v3)
    # serve. Wrapper: pkg/v3's go.mod replaces sdk/v3 with a local path.
    GoTool("pulumi", "github.com/pulumi/pulumi/pkg/v3", "v3.260.0", "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi",
           "pulumi", "-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v3.260.0"),
    # Its Python language host: Pulumi's own is not served by the Go module proxy, so e2e/tools/pulumi-language-python
    # holds a small one on sdk/v3 at the same version, with the SDK's executor script beside it (e2e/tools.py).
    GoTool("pulumi-language-python", "github.com/pulumi/pulumi/sdk/v3", "v3.260.0",
           "mlplatform.e2e/tools/pulumi-language-python", "pulumi-language-python",
           "-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v3.260.0"),
    # The Kubernetes provider v4.25.0 = commit f47bc2d6f199, the only provider/v4 version the proxy serves; the
    # Python SDK pulumi-kubernetes is pinned to the same release. Wrapper: its go.mod replaces sdk/v4 with a local
    # path; e2e/tools.py generates the schema it embeds, with its own generate.go.
    GoTool("pulumi-resource-kubernetes", "github.com/pulumi/pulumi-kubernetes/provider/v4",
           "v4.0.0-20260115033456-f47bc2d6f199",
           "github.com/pulumi/pulumi-kubernetes/provider/v4/cmd/pulumi-resource-kubernetes", "pulumi-kubernetes",
           "-X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version=4.25.0"),
)

# GKE's multi-networking API (Network, GKENetworkParamSet). GKE installs these CRDs itself and the stack only
# writes objects of them, so the synth checks those objects against the CRDs of this Go module release
# (config/crds/), which Go's module proxy serves and Go's module cache keeps (synth/gomodule.py). The newest
# release on 2026-12-05.
GKE_NETWORKING_API = ("github.com/GoogleCloudPlatform/gke-networking-api", "v0.2.11")

# Pod Security's checks (k8s.io/pod-security-admission, the API server's own, at E2E_KUBERNETES's release): the
# policy that enforces baseline where a GPUDirect team namespace's labels do not (components/pod_security.py) is
# held to this module's Go source in the tests, and to the e2e API server's Pod Security in make e2e.
POD_SECURITY_ADMISSION = ("k8s.io/pod-security-admission", "v0.34.4")
