"""The config of an EKS cluster, and the GPU instance types it knows, so that users name an instance type only."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Annotated, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator
from pydantic.alias_generators import to_camel

from versions import EKS_ADDON_VERSIONS, EKS_ECR_ACCOUNTS, EKS_KUBERNETES_VERSION, EKS_SYSTEM_AMI_RELEASES
from core.deployer import Deployer
from core.fields import (Cidr, DnsLabel, GpuPools, GpuSharing, InstanceType, KubernetesVersion, Model, PoolName,
                         SecurityGroupId, check_access_cidrs, check_mig, check_multi_node, kubernetes_minor, matching,
                         unique_items,
                         unique_names)
from core.gpus import GPU_MODELS, GpuModel
from core.vocabulary import HUGE_PAGE_RESOURCE

if TYPE_CHECKING:
    from core.handle import ClusterHandle


@dataclass(frozen=True)
class GpuInstance:
    instance_type: str
    accelerator: str
    gpus: int
    # Elastic Fabric Adapter interfaces (0: no EFA), the OS-bypass network NCCL uses across nodes: the
    # vpc.amazonaws.com/efa a node advertises, and what a pod taking the whole node asks for.
    efa_interfaces: int
    # NVMe instance-store disks, which Karpenter can stripe (RAID0) for images and scratch data.
    local_nvme: bool
    # vCPUs (EC2's DefaultVCpus): what libfabric's EFA provider sizes its huge-page bounce buffers by.
    vcpus: int

    @property
    def model(self) -> GpuModel:
        return GPU_MODELS[self.accelerator]

    @property
    def efa(self) -> bool:
        return self.efa_interfaces > 0

    @property
    def efa_huge_pages(self) -> int:
        """The 2 MiB huge pages an EFA node reserves at boot (0 without EFA): libfabric's EFA provider allocates
        its bounce buffers (two packet pools, 110 MB per endpoint) from huge pages when the node has them (ofiwg/
        libfabric prov/efa/docs/overview.md, as bottlerocket-os/bottlerocket-core-kit issue #140 quotes it;
        FI_EFA_USE_HUGE_PAGE in fi_efa(7), libfabric PR #9608), and Open MPI opens two endpoints per core. AWS's
        EFA installer reserves 110 MiB x 2 x vCPUs of them at every boot of a node with an EFA device (efa-config
        1.15 of aws-efa-installer 1.24.1: efa-config.service runs /opt/amazon/bin/efa-hugepages-reserve.sh, which
        sets vCPUs x 110 pages of 2 MiB, plus one for rounding, never fewer than already reserved), and Bottlerocket
        the same without the extra page (bottlerocket-core-kit PR #141, corndog's compute_hugepages_for_efa,
        HUGEPAGES_2MB_PER_CORE = 110 per logical CPU)."""
        return self.vcpus * EFA_HUGE_PAGES_PER_VCPU if self.efa else 0

    @property
    def gpudirect_rdma(self) -> bool:
        """Whether EFA moves GPU memory directly (GPUDirect RDMA): on p4 and p5 only, of the GPU types known here
        (aws/aws-ofi-nccl v1.21.1, doc/efa-env-var.md, "Sample Presets": "only p4 and p5 instances support both
        EFA and NVIDIA GPUDirect Remote Direct Memory Access (RDMA)")."""
        return self.efa and self.instance_type.startswith("p")


# 2 MiB huge pages per vCPU an EFA node reserves (GpuInstance.efa_huge_pages): 110 MB per libfabric endpoint,
# two endpoints per core, in pages of 2 MiB.
EFA_HUGE_PAGES_PER_VCPU = 110
HUGE_PAGE_MIB = 2

# vCPUs per size, the same in every GPU family here (aws/karpenter-provider-aws v1.14.1,
# website/content/en/docs/reference/instance-types.md, karpenter.k8s.aws/instance-cpu, generated from EC2's
# DescribeInstanceTypes; p3, retired from that page, from the same repository's v1.0/reference/instance-types.md).
# The one metal size here is g4dn.metal's.
_VCPUS = {"xlarge": 4, "2xlarge": 8, "4xlarge": 16, "8xlarge": 32, "12xlarge": 48, "16xlarge": 64, "24xlarge": 96,
          "48xlarge": 192, "metal": 96}


def _family(accelerator: str, sizes: dict[str, int], family: str, *, efa: dict[str, int],
            local_nvme: bool = True) -> dict[str, GpuInstance]:
    return {f"{family}.{size}": GpuInstance(f"{family}.{size}", accelerator, gpus, efa_interfaces=efa.get(size, 0),
                                            local_nvme=local_nvme, vcpus=_VCPUS[size])
            for size, gpus in sizes.items()}


# EFA interfaces per size: the vpc.amazonaws.com/efa Karpenter gives each instance type (aws/karpenter-provider-aws
# v1.14.1, website/content/en/docs/reference/instance-types.md, generated from EC2's DescribeInstanceTypes
# MaximumEfaInterfaces). The g families have one from 8xlarge up (g6e two and four at 24xlarge and 48xlarge);
# p4d/p4de four; p5 and p5e thirty-two; p5en sixteen (its 400 Gb/s cards are twice p5's).
_G_EFA = {"8xlarge": 1, "12xlarge": 1, "16xlarge": 1, "24xlarge": 1, "48xlarge": 1, "metal": 1}

# EC2 instance types with NVIDIA GPUs: instance type -> GPU model, GPUs per instance, EFA interfaces, instance store,
# vCPUs (and from those, the huge pages an EFA node reserves).
GPU_INSTANCES: dict[str, GpuInstance] = {
    **_family("nvidia-tesla-t4", {"xlarge": 1, "2xlarge": 1, "4xlarge": 1, "8xlarge": 1, "16xlarge": 1,
                                  "12xlarge": 4, "metal": 8}, "g4dn", efa=_G_EFA),
    **_family("nvidia-a10g", {"xlarge": 1, "2xlarge": 1, "4xlarge": 1, "8xlarge": 1, "16xlarge": 1,
                              "12xlarge": 4, "24xlarge": 4, "48xlarge": 8}, "g5", efa=_G_EFA),
    **_family("nvidia-l4", {"xlarge": 1, "2xlarge": 1, "4xlarge": 1, "8xlarge": 1, "16xlarge": 1,
                            "12xlarge": 4, "24xlarge": 4, "48xlarge": 8}, "g6", efa=_G_EFA),
    **_family("nvidia-l40s", {"xlarge": 1, "2xlarge": 1, "4xlarge": 1, "8xlarge": 1, "16xlarge": 1,
                              "12xlarge": 4, "24xlarge": 4, "48xlarge": 8}, "g6e",
              efa=_G_EFA | {"24xlarge": 2, "48xlarge": 4}),
    # p3 (unlike p3dn) has neither EFA nor instance store: EBS only.
    **_family("nvidia-tesla-v100", {"2xlarge": 1, "8xlarge": 4, "16xlarge": 8}, "p3", efa={},
              local_nvme=False),
    **_family("nvidia-tesla-a100", {"24xlarge": 8}, "p4d", efa={"24xlarge": 4}),
    **_family("nvidia-a100-80gb", {"24xlarge": 8}, "p4de", efa={"24xlarge": 4}),
    **_family("nvidia-h100-80gb", {"48xlarge": 8}, "p5", efa={"48xlarge": 32}),
    **_family("nvidia-h200-141gb", {"48xlarge": 8}, "p5e", efa={"48xlarge": 32}),
    **_family("nvidia-h200-141gb", {"48xlarge": 8}, "p5en", efa={"48xlarge": 16}),
}

# The retention periods CloudWatch Logs accepts (PutRetentionPolicy).
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
                      2922, 3288, 3653)

AwsRegion = Annotated[str, matching(r"[a-z]{2}(-gov)?-[a-z]+-\d", "an AWS region such as us-east-1 or eu-west-2")]
RoleArn = Annotated[str, matching(r"arn:aws(-[a-z]+)*:iam::\d{12}:role/[\w+=,.@/-]+",
                                  "an IAM role ARN such as arn:aws:iam::123456789012:role/platform-admins")]
AccountId = Annotated[str, matching(r"\d{12}", "a 12-digit AWS account ID such as 123456789012")]
SubnetId = Annotated[str, matching(r"subnet-[0-9a-f]{8,17}", "a subnet ID such as subnet-0123456789abcdef0")]
CapacityReservationId = Annotated[str, matching(r"cr-[0-9a-z]+", "a capacity reservation ID such as "
                                                                  "cr-0123456789abcdef0")]
KarpenterDuration = Annotated[str, matching(r"([0-9]+(s|m|h))+|Never", "a Karpenter duration such as 30s, 10m, 1h "
                                                                      "or Never")]


def pinned_on_eks(value: str) -> str:
    """EKS add-ons and the system AMI are built per minor: only a minor versions.py pins them for will do."""
    pinned = sorted(set(EKS_ADDON_VERSIONS) & set(EKS_SYSTEM_AMI_RELEASES), key=kubernetes_minor)
    if value not in pinned:
        raise ValueError(f"Kubernetes {value} has no pinned EKS add-on versions and system AMI release in "
                         f"versions.py (EKS_ADDON_VERSIONS, EKS_SYSTEM_AMI_RELEASES); on EKS give one of "
                         f"{', '.join(pinned)}, or add that minor's pins first")
    return value


def log_retention(value: int) -> int:
    if value not in LOG_RETENTION_DAYS:
        raise ValueError(f"{value} is not a retention CloudWatch Logs accepts; give one of "
                         f"{', '.join(map(str, LOG_RETENTION_DAYS))}")
    return value


EksKubernetesVersion = Annotated[KubernetesVersion, AfterValidator(pinned_on_eks)]
LogRetentionDays = Annotated[int, AfterValidator(log_retention)]
ControlPlaneLog = Literal["api", "audit", "authenticator", "controllerManager", "scheduler"]


class EksNetwork(Model):
    """A new VPC (private and public subnets in each zone, NAT), or the subnets of an existing one."""

    vpc_cidr: Cidr = "10.0.0.0/16"
    # One NAT gateway for all zones (cheaper) or one per zone (an outage of one zone cannot cut egress).
    nat_gateways: Literal["single", "perZone"] = "single"
    # Existing subnets instead of a new VPC: nodes in the private ones, load balancers in the public ones.
    private_subnet_ids: Annotated[list[SubnetId], unique_items("subnet")] = []
    public_subnet_ids: Annotated[list[SubnetId], unique_items("subnet")] = []
    # ECR (api, dkr), EKS Pod Identity (eks-auth) and STS interface endpoints in the new VPC, so that image
    # pulls and credentials skip the NAT gateway (about $7 a month each per zone, against NAT's per-GB
    # charge). The S3 gateway endpoint, which ECR's image layers come from, is free and always there.
    interface_endpoints: bool = False

    @field_validator("vpc_cidr")
    @classmethod
    def _room_for_subnets(cls, value: str) -> str:
        if not 16 <= ipaddress.ip_network(value).prefixlen <= 20:
            raise ValueError(f"{value} leaves no room for a private and a public subnet per zone: use a prefix "
                             "from /16 to /20")
        return value

    @model_validator(mode="after")
    def _one_kind_of_network(self) -> EksNetwork:
        if self.public_subnet_ids and not self.private_subnet_ids:
            raise ValueError("publicSubnetIds without privateSubnetIds: give the existing VPC's private subnets "
                             "(where nodes run) too, or leave both out for a new VPC")
        # Set alongside existing subnets, these would be silently unused.
        if unused := [to_camel(name) for name in ("vpc_cidr", "nat_gateways", "interface_endpoints")
                      if name in self.model_fields_set]:
            if self.private_subnet_ids:
                raise ValueError(f"{' and '.join(unused)} shape a new VPC, and privateSubnetIds use an existing "
                                 "one: remove one or the other")
        return self

    @property
    def existing(self) -> bool:
        return bool(self.private_subnet_ids)


class EksEndpoint(Model):
    """How the Kubernetes API is reached: publicly from named CIDRs, or only from inside the network."""

    # CIDRs that may reach the public API endpoint; none means the endpoint is private (reach it from the VPC).
    # EKS takes at most 40 (Amazon EKS service quotas: public endpoint access CIDR ranges per cluster).
    public_access_cidrs: Annotated[list[Cidr], unique_items("CIDR"), Field(max_length=40)] = []
    # Who inside the network reaches the private endpoint (self-hosted runners, a VPN's subnet): the cluster
    # security group admits only itself, so each of these gets an HTTPS rule on it.
    private_access_security_group_ids: Annotated[list[SecurityGroupId], unique_items("security group")] = []
    private_access_cidrs: Annotated[list[Cidr], unique_items("CIDR")] = []

    @property
    def public(self) -> bool:
        return bool(self.public_access_cidrs)


class EksSystemPool(Model):
    """Where the platform's own controllers run (on-demand): a managed node group of minNodes, and up to
    maxNodes with the nodes Karpenter adds while system pods are pending."""

    instance_type: InstanceType = "m7i.large"
    min_nodes: int = Field(default=2, ge=1)
    max_nodes: int = Field(default=4, ge=1)


class EksCpuPool(Model):
    """A Karpenter NodePool of general-purpose instances for teams' CPU work (data preparation, evaluation,
    notebooks without GPUs), untainted, scaling from zero: the system pool is tainted for the platform's
    controllers, and GPU pools for GPU work."""

    # Karpenter picks the cheapest that fits what is pending.
    instance_types: Annotated[list[InstanceType], unique_items("instance type")] = Field(
        default=["m7i.xlarge", "m7i.2xlarge", "m7i.4xlarge"], min_length=1)
    capacity_types: Annotated[list[Literal["spot", "on-demand"]], unique_items("capacity type")] = Field(
        default=["on-demand"], min_length=1)
    # The most nodes it may have at once.
    max_nodes: int = Field(default=4, ge=1)


class EksGpuPool(Model):
    """A Karpenter NodePool of GPU instances that scales from zero."""

    name: PoolName
    instance_types: Annotated[list[str], unique_items("instance type")] = Field(min_length=1)
    # "reserved": the On-Demand Capacity Reservations or Capacity Blocks in capacityReservationIds, which
    # Karpenter fills first (Karpenter's "Utilizing ODCRs and Capacity Blocks" task; Capacity Blocks from v1.6).
    capacity_types: Annotated[list[Literal["spot", "on-demand", "reserved"]], unique_items("capacity type")] = Field(
        default=["on-demand"], min_length=1)
    capacity_reservation_ids: Annotated[list[CapacityReservationId], unique_items("capacity reservation")] = Field(
        default=[], max_length=30)
    # The pool's largest size; its nvidia.com/gpu limit is this many nodes' GPUs.
    max_nodes: int = Field(ge=1, le=1000)
    # Room for CUDA images and datasets on the root volume, for instance types without NVMe instance store.
    disk_size_gib: int = Field(default=200, ge=50, le=16384)
    # How long an empty GPU node waits before Karpenter removes it ("Never" keeps it).
    consolidate_after: KarpenterDuration = "10m"
    sharing: GpuSharing = GpuSharing()
    # Elastic Fabric Adapter interfaces on every node, for multi-node training (NCCL over EFA on p4/p5).
    efa: bool = False
    # An EFA pool's one availability zone on a new VPC (of availabilityZones; by default the first): its nodes
    # share a cluster placement group, which EC2 keeps within one zone. Give the zone the instance type is
    # offered in, or that the pool's capacity reservations are in (reservations are per zone). On an existing
    # network, subnetId decides the zone instead.
    zone: str | None = None
    # On an existing network (network.privateSubnetIds), an EFA pool's one private subnet, of those: its nodes
    # go there, so its zone is the pool's. The stack cannot look up which zone an existing subnet is in (the
    # offline synth calls no AWS API), so the pool names the subnet itself rather than a zone, which none of
    # the subnets might be in: Karpenter would then launch nothing.
    subnet_id: SubnetId | None = None

    @field_validator("instance_types")
    @classmethod
    def _gpu_instances(cls, types: list[str]) -> list[str]:
        for instance_type in types:
            if instance_type not in GPU_INSTANCES:
                families = sorted({name.split(".")[0] for name in GPU_INSTANCES})
                raise ValueError(f"{instance_type!r} is not a GPU instance type this platform knows; GPU families: "
                                 f"{', '.join(families)} (for example g5.xlarge, p5.48xlarge)")
        shapes = {(GPU_INSTANCES[t].accelerator, GPU_INSTANCES[t].gpus) for t in types}
        if len(shapes) > 1:
            raise ValueError(f"{', '.join(types)} differ in GPU model or count; a pool has one GPU shape, so that "
                             "its labels and its nvidia.com/gpu limit mean one thing: split them into pools")
        return types

    @model_validator(mode="after")
    def _sharing_fits_the_gpu(self) -> EksGpuPool:
        check_mig(self.accelerator, self.sharing)
        if self.sharing.mig_strategy != "none":
            # The EKS accelerated AMI has the driver and fabric manager but no MIG manager: nothing would put
            # the GPUs into MIG mode, and MIG requests would stay Pending.
            raise ValueError(f"sharing.migStrategy {self.sharing.mig_strategy!r}: MIG is not available on EKS "
                             "pools (nothing on the EKS AMI partitions the GPUs); use whole GPUs or "
                             "sharing.timeSlicing here, or a GKE pool for MIG")
        slicing = self.sharing.time_slicing
        if slicing is not None and slicing.rename_by_default:
            # Karpenter launches a node only for what an instance type advertises (its Fits check, Karpenter
            # v1.14); EC2 advertises nvidia.com/gpu, never nvidia.com/gpu.shared, so such pods would stay
            # Pending on a pool at zero nodes forever.
            raise ValueError("sharing.timeSlicing.renameByDefault: Karpenter launches EKS GPU nodes only for "
                             "nvidia.com/gpu, so pods asking for nvidia.com/gpu.shared would never get a node; "
                             "leave renameByDefault at false (shares are then requested as nvidia.com/gpu)")
        if ("reserved" in self.capacity_types) != bool(self.capacity_reservation_ids):
            raise ValueError("capacityTypes 'reserved' and capacityReservationIds go together: list the "
                             "reservations (or Capacity Blocks, cr-...) and add 'reserved' to capacityTypes, or "
                             "neither")
        if "disk_size_gib" in self.model_fields_set and self.instance_store:
            raise ValueError(f"diskSizeGib: {', '.join(self.instance_types)} have NVMe instance store, striped for "
                             "images and pods' scratch data; the root volume then holds only the OS and is not "
                             "sized by diskSizeGib: remove it (it sizes the root volume of EBS-only types such "
                             "as p3)")
        if self.zone is not None and not self.efa:
            raise ValueError("zone: only EFA pools are held to one zone (their placement group's); other pools "
                             "use every zone of availabilityZones: remove zone, or set efa: true")
        if self.subnet_id is not None and not self.efa:
            raise ValueError("subnetId: only EFA pools are held to one subnet (their placement group's zone); "
                             "other pools use every subnet of network.privateSubnetIds: remove subnetId, or set "
                             "efa: true")
        if self.subnet_id is not None and self.zone is not None:
            raise ValueError(f"zone and subnetId: the subnet {self.subnet_id} decides the pool's zone, which the "
                             "stack cannot check against zone: remove zone")
        if self.efa and not all(GPU_INSTANCES[t].efa for t in self.instance_types):
            without = [t for t in self.instance_types if not GPU_INSTANCES[t].efa]
            with_efa = sorted(t for t, i in GPU_INSTANCES.items()
                              if i.efa and (i.accelerator, i.gpus) == (self.accelerator, self.shape.gpus))
            raise ValueError(f"efa: {', '.join(without)} have no Elastic Fabric Adapter; EFA-capable "
                             f"{self.accelerator} types: {', '.join(with_efa) or 'none'}")
        if self.efa and len(counts := {GPU_INSTANCES[t].efa_interfaces for t in self.instance_types}) > 1:
            # A whole-node pod asks for the node's every interface: one count, or it fits only some of the nodes.
            raise ValueError(f"efa: {', '.join(self.instance_types)} have {' or '.join(map(str, sorted(counts)))} "
                             "EFA interfaces; an EFA pool has one count, which its whole-node pods ask for: split "
                             "them into pools")
        if self.efa and len(pages := {GPU_INSTANCES[t].efa_huge_pages for t in self.instance_types}) > 1:
            # Its nodes reserve huge pages by their vCPUs, and a whole-node pod asks for all of them: one count.
            vcpus = sorted({GPU_INSTANCES[t].vcpus for t in self.instance_types})
            raise ValueError(f"efa: {', '.join(self.instance_types)} have {' or '.join(map(str, vcpus))} vCPUs, "
                             f"so their nodes reserve {' or '.join(map(str, sorted(pages)))} huge pages for EFA; an "
                             "EFA pool has one count, which its whole-node pods ask for: split them into pools")
        if self.multi_node:
            check_multi_node(self.sharing, self.max_nodes)
        return self

    def nccl_env(self) -> dict[str, str]:
        """The environment NCCL's EFA plugin needs in an EFA pool's pods (aws/aws-ofi-nccl v1.21.1,
        doc/efa-env-var.md, "Sample Presets" for aws-ofi-nccl on p4/p5 and on EFA instances without RDMA): libfabric
        held to its EFA provider, never its TCP one; NCCL's Simple protocol;
        GPUDirect RDMA where the instance has it (set harmlessly for newer libfabric, needed by older)."""
        if not self.efa:
            return {}
        return {"FI_PROVIDER": "efa", "NCCL_PROTO": "simple",
                **({"FI_EFA_USE_DEVICE_RDMA": "1"} if self.shape.gpudirect_rdma else {})}

    @property
    def huge_pages(self) -> int:
        """The 2 MiB huge pages each node of the pool reserves for EFA at boot (0 outside EFA pools)."""
        return self.shape.efa_huge_pages if self.efa else 0

    def huge_page_request(self) -> dict[str, str]:
        """What a whole-node pod asks for of them, in requests and limits alike (Kubernetes requires huge-page
        requests to equal limits): every page of the node, else its hugetlb limit leaves libfabric none."""
        return {HUGE_PAGE_RESOURCE: f"{self.huge_pages * HUGE_PAGE_MIB}Mi"} if self.huge_pages else {}

    @property
    def multi_node(self) -> bool:
        """EFA is there for traffic between nodes: an EFA pool is where multi-node jobs run."""
        return self.efa

    @property
    def shape(self) -> GpuInstance:
        return GPU_INSTANCES[self.instance_types[0]]

    @property
    def instance_store(self) -> bool:
        """Whether every instance type has NVMe instance store, which Karpenter stripes (RAID0) for images and
        pods' ephemeral storage, leaving the root volume only the OS."""
        return all(GPU_INSTANCES[t].local_nvme for t in self.instance_types)

    @property
    def accelerator(self) -> str:
        return self.shape.accelerator

    def efa_zone(self, cluster_zones: list[str]) -> str | None:
        """The zone of an EFA pool's nodes: its own, or the cluster's first; none named where its subnetId
        decides it."""
        if self.subnet_id is not None:
            return None
        return self.zone or cluster_zones[0]

    def gpu_capacity(self) -> int:
        return self.max_nodes * self.shape.gpus * self.sharing.shares_per_gpu


# The longest name the EKS components derive from the cluster name is a Karpenter EventBridge rule that Pulumi
# autonames `<name>-karpenter-spot-interruption-<7 random>`; the IAM roles are shorter (`<name>-karpenter-
# controller-<7>`). EventBridge rule and IAM role names are at most 64 characters (AWS EventBridge PutRule and
# IAM CreateRole API limits), so a cluster name is at most 64 - 36 = 28. tests/test_bad_input.py checks every
# derived name of a cluster at this length against those limits.
EKS_NAME_MAX = 28
EksClusterName = Annotated[DnsLabel, matching(rf".{{1,{EKS_NAME_MAX}}}", f"an EKS cluster name of at most {EKS_NAME_MAX} "
                                              "characters: longer, the names derived from it (such as its Karpenter "
                                              "EventBridge rules and IAM roles) would break AWS's 64-character limit")]


class EksClusterConfig(GpuPools, Model):
    cloud: Literal["aws"]
    # The cloud contract (clouds/__init__.py): the config namespaces its stacks may set, and the secrets
    # providers CI decrypts its stacks with (none: CI never deploys this cloud's stacks).
    provider_namespaces: ClassVar[tuple[str, ...]] = ("aws",)
    ci_secrets_providers: ClassVar[tuple[str, ...]] = ("awskms://",)

    def build(self) -> ClusterHandle:
        from clouds.eks.cluster import EksCluster  # only this cloud's stacks load its SDK
        return EksCluster(self.name, self).handle

    def unreachable_by(self, deployer: Deployer) -> str | None:
        """An EKS cluster's API admits a deployer by its endpoint's public CIDRs or, inside the VPC, by its security groups."""
        from clouds.eks.reachability import unreachable
        return unreachable(self, deployer)

    name: EksClusterName
    # prod: the control plane, system nodes and KMS key are protected, and the API is never open to the world.
    environment: Literal["dev", "prod"] = "dev"
    region: AwsRegion
    # The account the cluster lives in. The AWS provider refuses any other (allowed_account_ids), so that a
    # deploy run with another account's credentials stops before it reads or creates anything there. Left
    # out, it is the one account the role ARNs below all name.
    account_id: AccountId | None = None
    availability_zones: Annotated[list[str], unique_items("availability zone")]
    kubernetes_version: EksKubernetesVersion = EKS_KUBERNETES_VERSION
    network: EksNetwork = EksNetwork()
    endpoint: EksEndpoint = EksEndpoint()
    # IAM roles that administer the cluster (EKS access entries with the cluster admin policy). The role running
    # `pulumi up` is made admin too when it is not listed; list CI's deploy role, so that a run by another
    # role (which then becomes that extra admin instead) does not take CI's access away.
    admin_role_arns: Annotated[list[RoleArn], unique_items("role")] = Field(min_length=1)
    # IAM roles that may look at the cluster and change nothing (EKS access entries): viewRoleArns get
    # AmazonEKSViewPolicy (built-in objects, no Secrets: CI's pull-request preview role), readRoleArns
    # AmazonEKSAdminViewPolicy (every object, Secrets included: CI's read role on main, whose drift refresh reads
    # the custom resources and Helm's release Secrets the stack owns).
    view_role_arns: Annotated[list[RoleArn], unique_items("role")] = []
    read_role_arns: Annotated[list[RoleArn], unique_items("role")] = []
    system_pool: EksSystemPool = EksSystemPool()
    cpu_pool: EksCpuPool = EksCpuPool()
    gpu_pools: list[EksGpuPool] = []
    # Days the control plane's logs are kept in CloudWatch.
    log_retention_days: LogRetentionDays = 90
    # The control plane's logs sent to CloudWatch (billed per GB ingested). By default the three that say who did
    # what (as terraform-aws-eks enables by default); controllerManager and scheduler are voluminous and for
    # debugging EKS itself.
    control_plane_logs: Annotated[list[ControlPlaneLog], unique_items("log type")] = ["api", "audit",
                                                                                       "authenticator"]
    # EKS standard support only: at its end the control plane is upgraded, instead of silently paying
    # extended support's price. "extended" keeps an old minor, at extended-support rates.
    support_type: Literal["standard", "extended"] = "standard"
    # The account's EC2 Spot service-linked role, which spot launches need, made by the stack when the account
    # lacks it; false leaves it to whoever manages the account's IAM.
    spot_service_linked_role: bool = True
    # How the account-wide IAM roles of the system nodes and Karpenter's nodes are named. `regional`:
    # `<name>-<region>-node` and `<name>-<region>-karpenter`, so that one cluster name in two regions of an
    # account never collides. `cluster`: `<name>-node` and `<name>-karpenter`, the names stacks made before
    # this key existed; such a stack sets it to keep its roles (docs/aws.md, "IAM role names"). Left out, a
    # preview stops if the account already has roles of the older names, so that none is replaced unasked.
    iam_role_names: Literal["regional", "cluster"] | None = None

    @field_validator("view_role_arns", "read_role_arns")
    @classmethod
    def _one_entry_per_role(cls, roles: list[str], info: ValidationInfo) -> list[str]:
        # EKS takes one access entry per principal.
        for other in ("admin_role_arns", "view_role_arns"):
            if other != info.field_name and (both := sorted(set(roles) & set(info.data.get(other, [])))):
                raise ValueError(f"{', '.join(both)} is in {to_camel(other)} already (EKS takes one access entry "
                                 "per role); list it once")
        return roles

    @property
    def account(self) -> str:
        """The account deploys of this stack are allowed in: accountId, or the one its role ARNs name."""
        return self.account_id or self._role_accounts()[0]

    def _role_accounts(self) -> list[str]:
        return sorted({arn.split(":")[4] for arn in (*self.admin_role_arns, *self.view_role_arns,
                                                      *self.read_role_arns)})

    @model_validator(mode="after")
    def _one_account(self) -> EksClusterConfig:
        # EKS admits roles of other accounts (STANDARD access entries), so mixed accounts are no mistake; but
        # which one is the cluster's is then the user's to say, not a guess.
        if self.account_id is None and len(accounts := self._role_accounts()) > 1:
            raise ValueError(f"accountId: adminRoleArns, viewRoleArns and readRoleArns name the accounts "
                             f"{', '.join(accounts)}; give accountId, the 12-digit account the cluster is "
                             "deployed in, which is the only one the stack may be deployed with")
        return self

    @field_validator("availability_zones")
    @classmethod
    def _two_zones(cls, zones: list[str]) -> list[str]:
        if len(set(zones)) < 2:
            raise ValueError(f"{len(set(zones))} availability zone(s) given; an EKS control plane and a highly "
                             "available system pool need at least two, such as [us-east-1a, us-east-1b]")
        if len(zones) > 4:
            raise ValueError("at most four availability zones: the VPC is split into four private subnets")
        return zones

    @field_validator("gpu_pools")
    @classmethod
    def _unique_pools(cls, pools: list[EksGpuPool]) -> list[EksGpuPool]:
        return unique_names(pools, "GPU pool")

    def _check_subnet(self, index: int, pool: EksGpuPool) -> None:
        """An EFA pool names its subnet on an existing network, one of its private subnets, and only there."""
        private = self.network.private_subnet_ids
        if pool.subnet_id is not None and not self.network.existing:
            raise ValueError(f"gpuPools[{index}].subnetId: the cluster makes its own VPC (no "
                             "network.privateSubnetIds), with one private subnet per zone: remove subnetId, and "
                             "give the pool's zone (one of availabilityZones) instead")
        if pool.efa and self.network.existing and pool.subnet_id is None:
            raise ValueError(f"gpuPools[{index}].subnetId: an EFA pool on existing subnets names the one its nodes "
                             "go in (its placement group is one zone's, and the stack cannot look up the zones of "
                             f"network.privateSubnetIds): give one of {', '.join(private)}")
        if pool.subnet_id is not None and self.network.existing and pool.subnet_id not in private:
            raise ValueError(f"gpuPools[{index}].subnetId: {pool.subnet_id} is not one of network.privateSubnetIds "
                             f"({', '.join(private)}), where the cluster's nodes run")

    @model_validator(mode="after")
    def _consistent(self) -> EksClusterConfig:
        for zone in self.availability_zones:
            if not (zone.startswith(self.region) and re.fullmatch(r"[a-z]", zone[len(self.region):])):
                raise ValueError(f"availabilityZones: {zone!r} is not a zone of {self.region} (such as "
                                 f"{self.region}a)")
        if any(pool.efa for pool in self.gpu_pools) and self.region not in EKS_ECR_ACCOUNTS:
            raise ValueError(f"gpuPools: EFA pools need the EFA device plugin's image from EKS's registry in "
                             f"{self.region}, whose account versions.py does not know (EKS_ECR_ACCOUNTS): add it "
                             "from the EKS User Guide's \"Amazon container image registries\" table, or use "
                             "pools without efa")
        for index, pool in enumerate(self.gpu_pools):
            if pool.zone is not None and pool.zone not in self.availability_zones:
                raise ValueError(f"gpuPools[{index}].zone: {pool.zone!r} is not one of availabilityZones "
                                 f"({', '.join(self.availability_zones)}), where the nodes' subnets are")
            self._check_subnet(index, pool)
        if self.network.existing and len(self.network.private_subnet_ids) < 2:
            raise ValueError("network.privateSubnetIds: give at least two private subnets, in different zones")
        try:
            check_access_cidrs(self.endpoint.public_access_cidrs, self.environment)
        except ValueError as exc:
            raise ValueError(f"endpoint.publicAccessCidrs: {exc}, or leave the list empty for a private "
                             "endpoint") from None
        return self
