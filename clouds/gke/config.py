"""The config of a GKE cluster, and the GPU machine types it knows: which accelerators they carry, how many."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, ClassVar, Annotated, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from versions import KUBERNETES_VERSION
from core.deployer import Deployer
from core.fields import (Cidr, DnsLabel, GpuPools, GpuSharing, KubernetesVersion, MachineType, Model, PoolName,
                         check_access_cidrs, check_disjoint, check_mig, check_multi_node, check_unique, matching,
                         unique_items,
                         unique_names)
from core.gpus import GPU_MODELS

if TYPE_CHECKING:
    from core.handle import ClusterHandle


@dataclass(frozen=True)
class GpuMachine:
    """GPUs a machine family carries: fixed for A2, A3, A4 and G2; chosen from `counts` for N1."""

    accelerators: tuple[str, ...]
    counts: tuple[int, ...]


def _fixed(accelerator: str, sizes: dict[str, int], family: str) -> dict[str, GpuMachine]:
    return {f"{family}-{size}": GpuMachine((accelerator,), (gpus,)) for size, gpus in sizes.items()}


GPU_MACHINES: dict[str, GpuMachine] = {
    **_fixed("nvidia-l4", {"standard-4": 1, "standard-8": 1, "standard-12": 1, "standard-16": 1,
                           "standard-32": 1, "standard-24": 2, "standard-48": 4, "standard-96": 8}, "g2"),
    **_fixed("nvidia-tesla-a100", {"highgpu-1g": 1, "highgpu-2g": 2, "highgpu-4g": 4, "highgpu-8g": 8,
                                   "megagpu-16g": 16}, "a2"),
    **_fixed("nvidia-a100-80gb", {"ultragpu-1g": 1, "ultragpu-2g": 2, "ultragpu-4g": 4, "ultragpu-8g": 8}, "a2"),
    **_fixed("nvidia-h100-80gb", {"highgpu-1g": 1, "highgpu-2g": 2, "highgpu-4g": 4, "highgpu-8g": 8}, "a3"),
    **_fixed("nvidia-h100-mega-80gb", {"megagpu-8g": 8}, "a3"),
    **_fixed("nvidia-h200-141gb", {"ultragpu-8g": 8}, "a3"),
    # A4: eight B200s, GKE's accelerator type nvidia-b200 (Compute Engine's accelerator-optimized machine family,
    # A4 series; cluster-toolkit 1047080's examples/gke-a4, accelerator_type; Google's nccl-rdma-installer.yaml).
    **_fixed("nvidia-b200", {"highgpu-8g": 8}, "a4"),
}
# GPU machine types Compute Engine does not sell on demand, and how they can be had instead (Compute Engine's
# "Accelerator-optimized machine family" page, A3 series, and AI Hypercomputer's "Consumption options"): A3 High
# with 1, 2 or 4 GPUs as Spot or flex-start VMs only; A3 Mega and A3 Ultra from a reservation, as Spot or
# flex-start VMs. A4 as A3 Ultra: AI Hypercomputer's "Choose a consumption option" offers A4 by future
# reservation (in AI Hypercomputer or in calendar mode), flex-start and Spot, and no on-demand column at all.
# An on-demand pool of them is created, but never gets a node.
NOT_ON_DEMAND: dict[str, tuple[str, ...]] = {
    **{f"a3-highgpu-{gpus}g": ("spot",) for gpus in (1, 2, 4)},
    "a3-megagpu-8g": ("spot", "reservation"),
    "a3-ultragpu-8g": ("spot", "reservation"),
    "a4-highgpu-8g": ("spot", "reservation"),
}
# The pool GKE creates with every cluster; the cluster removes it once created.
DEFAULT_POOL = "default-pool"
# GKE's bound on maxSharedClientsPerGpu (GKE's GPU time-sharing docs).
GKE_MAX_SHARED_CLIENTS = 48
# N1 machines take attached GPUs, each count up to a size of machine: GPU count -> (most vCPUs, most memory in
# GB) of the N1 machine it attaches to. Source: Compute Engine's "GPU machine types" page, N1 table (T4: 48 vCPUs
# and 312 GB up to two GPUs, 96 and 624 with four; V100: 12 vCPUs and 78 GB per GPU), as skypilot-org/skypilot
# encodes it (sky/clouds/service_catalog/gcp_catalog.py, _NUM_ACC_TO_MAX_CPU_AND_MEMORY). A larger machine fails
# at node-pool creation.
N1_ACCELERATORS: dict[str, dict[int, tuple[int, int]]] = {
    "nvidia-tesla-t4": {1: (48, 312), 2: (48, 312), 4: (96, 624)},
    "nvidia-tesla-v100": {1: (12, 78), 2: (24, 156), 4: (48, 312), 8: (96, 624)},
}
# Memory per vCPU of the predefined N1 machine types that take GPUs (Compute Engine's general-purpose machine
# family page: n1-standard 3.75 GB, n1-highmem 6.5 GB, n1-highcpu 0.9 GB per vCPU).
N1_MEMORY_PER_VCPU = {"standard": 3.75, "highmem": 6.5, "highcpu": 0.9}


@dataclass(frozen=True)
class NodeSettings:
    """What a machine type needs from its node pool beyond the machine type itself."""

    # Google's virtual NIC: A3 machines have no other network interface (GKE docs, "About GPUs": A3 needs gVNIC);
    # A4's two host NICs are gVNICs too (Compute Engine, "Networking and GPU machines": A4 and A3 Ultra).
    gvnic: bool = False
    # Local SSDs bundled with the machine, given to the node as ephemeral storage: on A3 the machine type
    # includes them, and a pool that asks for fewer is refused (GKE's A3 guide sets
    # --ephemeral-storage-local-ssd=count=16 on a3-highgpu-8g and a3-megagpu-8g, 32 on a3-ultragpu-8g). A4 has
    # A3 Ultra's 32 (cluster-toolkit 1047080, modules/compute/gke-node-pool/disk_definitions.tf,
    # local_ssd_machines: 32 for both a3-ultragpu-8g and a4-highgpu-8g).
    local_ssds: int = 0
    # The boot disk type: A3 Ultra boots from Hyperdisk only; the others take pd-balanced. A4 as A3 Ultra:
    # Compute Engine's "About Hyperdisk" gives the A4 row the same Hyperdisk types as A3 (H200), and no stored
    # source says A4 takes Persistent Disk (cluster-toolkit's examples/gke-a4 leaves disk_type to GKE's default),
    # so the conservative choice is the type known to boot it: hyperdisk-balanced.
    disk_type: str = "pd-balanced"


# A3 High's smaller shapes carry 2, 4 and 8 of the 16 local SSDs (375 GB each) of a3-highgpu-8g.
NODE_SETTINGS: dict[str, NodeSettings] = {
    **{f"a3-highgpu-{gpus}g": NodeSettings(gvnic=True, local_ssds=2 * gpus) for gpus in (1, 2, 4, 8)},
    "a3-megagpu-8g": NodeSettings(gvnic=True, local_ssds=16),
    "a3-ultragpu-8g": NodeSettings(gvnic=True, local_ssds=32, disk_type="hyperdisk-balanced"),
    "a4-highgpu-8g": NodeSettings(gvnic=True, local_ssds=32, disk_type="hyperdisk-balanced"),
}


def node_settings(machine_type: str) -> NodeSettings:
    return NODE_SETTINGS.get(machine_type, NodeSettings())


@dataclass(frozen=True)
class GpuFabric:
    """The network a machine type's GPUs reach other nodes' GPUs over, and the NICs it takes beside the
    primary one: each a node network config of the pool, a VPC subnet, and a GKE Network a pod attaches to."""

    # GPUDirect-TCPX (A3 High), GPUDirect-TCPXO (A3 Mega) or GPUDirect RDMA over RoCE (A3 Ultra, A4).
    kind: Literal["tcpx", "tcpxo", "rdma"]
    # NICs for GPU-to-GPU traffic only: gVNICs in a VPC each (TCPX, TCPXO), or RDMA NICs in the subnets of one
    # RoCE VPC (RDMA).
    gpu_nics: int
    # Further gVNICs for host traffic, in a VPC each: A3 Ultra's and A4's second Titanium gVNIC.
    host_nics: int = 0

    @property
    def device_mode(self) -> str:
        """The GKENetworkParamSet deviceMode of its GPU NICs (gke-networking-api, GKENetworkParamSet CRD)."""
        return "RDMA" if self.kind == "rdma" else "NetDevice"

    @property
    def host_access(self) -> str:
        """What a pod on this fabric takes from its node beyond Pod Security `baseline` (Google's nccl-test
        manifests at the pinned container-engine-accelerators commit, as clouds/gke/fabric.py builds them)."""
        if self.kind == "rdma":
            return "its pods mount the gIB NCCL plugin from the node (a hostPath volume)"
        return ("its pods run the plugin's receive-datapath daemon, which mounts the node's /sys, /proc/sys and "
                "NVIDIA libraries (hostPath volumes) and adds NET_ADMIN")

    @property
    def mtu(self) -> int:
        """The MTU of its GPU NICs' VPCs: 8244 for TCPX and TCPXO (GKE, "Maximize GPU network bandwidth with
        GPUDirect and multi-networking", and cluster-toolkit 1047080's examples/gke-a3-megagpu, gpunets mtu),
        8896 for a RoCE VPC (VPC docs, "RDMA network profiles": the recommended and default MTU)."""
        return 8896 if self.kind == "rdma" else 8244


# The machine types whose GPUs have a network of their own between nodes: only these take a multiNode pool.
# Compute Engine, "Networking and GPU machines" (compute/docs/gpus/gpu-network-bandwidth): A3 High runs
# GPUDirect-TCPX and A3 Mega GPUDirect-TCPXO (GKE's "Maximize GPU network bandwidth" page: "up to four"
# secondary NICs on A3 High, "up to eight" on A3 Mega, each for GPU data only); A3 Ultra has eight ConnectX-7
# RDMA NICs, one per GPU, and two gVNICs (the primary and one more for host traffic); A4 has the same (the
# page's "A4 and A3 Ultra machine types": eight CX-7 NICs of 3,200 Gbps in all, two gVNICs), wired the same in
# cluster-toolkit 1047080 (examples/gke-a4/gke-a4.yaml differs from gke-a3-ultragpu.yaml only in names: a
# second gVNIC VPC and a RoCE VPC of eight subnets). Smaller A3 High shapes and the A2, G2 and N1 machines have
# no GPU NICs: one NIC for everything.
GPU_FABRICS: dict[str, GpuFabric] = {
    "a3-highgpu-8g": GpuFabric("tcpx", gpu_nics=4),
    "a3-megagpu-8g": GpuFabric("tcpxo", gpu_nics=8),
    "a3-ultragpu-8g": GpuFabric("rdma", gpu_nics=8, host_nics=1),
    "a4-highgpu-8g": GpuFabric("rdma", gpu_nics=8, host_nics=1),
}
# The subnet of every NIC a multi-node pool adds: a /22 has 1020 addresses for nodes (Compute Engine keeps
# four of each subnet), above any pool's maxNodes (at most 1000). A pool's subnets are cut from its own /18
# of network.gpuNicsCidr, sixteen /22s, room for A3 Ultra's nine.
GPU_NIC_SUBNET_PREFIX = 22
GPU_NIC_POOL_PREFIX = 18
# Compute Engine names (networks, subnetworks, firewall rules): at most 63 characters (RFC 1035 labels).
GCE_NAME_MAX = 63
# The longest suffix a pool's NIC resources get after <cluster>-<pool> (clouds/gke/fabric.py: -rdma-7).
GPU_NIC_SUFFIX_MAX = len("-rdma-7")


def _zones(region: str, letters: str) -> frozenset[str]:
    return frozenset(f"{region}-{letter}" for letter in letters)


# Which zones offer which accelerator, for the regions this platform supports GPU pools in. A pool in a zone
# without its GPU is created but never gets a node. Source: Compute Engine's own listings (`gcloud compute
# accelerator-types list` and `machine-types list`) as collected in skypilot-org/skypilot-catalog,
# catalogs/v8/gcp/vms.csv (2026): the A2/A3/G2 machine types' zones, and the N1-attached T4 and V100; they
# agree with Google's "GPU regions and zones availability" page. A4's nvidia-b200 from the same file (commit
# 006059e, rows a4-highgpu-8g): us-central1-b, us-east4-b and europe-west4-b only here; its on-demand and Spot
# prices there are 0.0, which says nothing of the zones. A region not in this table has no GPU pools
# here until someone adds it from the same sources (`gcloud compute accelerator-types list --filter=zone:<region>`).
GPU_ZONES: dict[str, dict[str, frozenset[str]]] = {
    "us-central1": {
        "nvidia-tesla-t4": _zones("us-central1", "abcf"),
        "nvidia-tesla-v100": _zones("us-central1", "abcf"),
        "nvidia-l4": _zones("us-central1", "abc"),
        "nvidia-tesla-a100": _zones("us-central1", "abcf"),
        "nvidia-a100-80gb": _zones("us-central1", "ac"),
        "nvidia-h100-80gb": _zones("us-central1", "abc"),
        "nvidia-h100-mega-80gb": _zones("us-central1", "abc"),
        "nvidia-h200-141gb": _zones("us-central1", "b"),
        "nvidia-b200": _zones("us-central1", "b"),
    },
    "us-east4": {
        "nvidia-tesla-t4": _zones("us-east4", "abc"),
        "nvidia-l4": _zones("us-east4", "ac"),
        "nvidia-a100-80gb": _zones("us-east4", "c"),
        "nvidia-h100-80gb": _zones("us-east4", "abc"),
        "nvidia-h100-mega-80gb": _zones("us-east4", "abc"),
        "nvidia-h200-141gb": _zones("us-east4", "b"),
        "nvidia-b200": _zones("us-east4", "b"),
    },
    "europe-west4": {
        "nvidia-tesla-t4": _zones("europe-west4", "abc"),
        "nvidia-tesla-v100": _zones("europe-west4", "abc"),
        "nvidia-l4": _zones("europe-west4", "abc"),
        "nvidia-tesla-a100": _zones("europe-west4", "ab"),
        "nvidia-a100-80gb": _zones("europe-west4", "a"),
        "nvidia-h100-80gb": _zones("europe-west4", "bc"),
        "nvidia-h100-mega-80gb": _zones("europe-west4", "bc"),
        "nvidia-h200-141gb": _zones("europe-west4", "a"),
        "nvidia-b200": _zones("europe-west4", "b"),
    },
}


def check_gpu_zones(region: str, accelerator: str, zones: list[str]) -> None:
    """ValueError unless every zone of a pool offers its accelerator, naming the zones that do."""
    if region not in GPU_ZONES:
        raise ValueError(f"no GPU zone table for region {region}: GPU pools can go to {', '.join(GPU_ZONES)} "
                         "(add the region to GPU_ZONES in clouds/gke/config.py from Google's GPU zones page)")
    offering = GPU_ZONES[region].get(accelerator, frozenset())
    if missing := [zone for zone in zones if zone not in offering]:
        where = f"only in {', '.join(sorted(offering))}" if offering else "in no zone"
        raise ValueError(f"{accelerator} is not offered in {', '.join(missing)}: {region} has it {where}; "
                         "set the pool's zones to those")

GcpProject = Annotated[str, matching(r"[a-z][a-z0-9-]{4,28}[a-z0-9]",
                                     "a Google Cloud project ID (6 to 30 lowercase letters, digits, hyphens)")]
ServiceAccountEmail = Annotated[str, matching(r"[a-z][a-z0-9-]{4,28}[a-z0-9]@[a-z][a-z0-9-]{4,28}[a-z0-9]"
                                              r"\.iam\.gserviceaccount\.com",
                                              "a service account's email such as "
                                              "mlplatform-preview@my-project.iam.gserviceaccount.com")]
GcpRegion = Annotated[str, matching(r"[a-z]+-[a-z]+\d+", "a Google Cloud region such as us-central1 or europe-west4")]
def _not_default_pool(value: str) -> str:
    if value == DEFAULT_POOL:
        raise ValueError(f"{DEFAULT_POOL!r} is GKE's temporary first pool, which the cluster creates and removes; "
                         "give the GPU pool another name")
    return value


# GKE node pool names: at most 40 lowercase letters, digits and '-', starting with a letter (GKE API,
# NodePool.name).
GkePoolName = Annotated[PoolName, matching(r"[a-z][-a-z0-9]{0,38}[a-z0-9]|[a-z]",
                                           "a GKE node pool name: at most 40 lowercase letters, digits and '-', "
                                           "starting with a letter"), AfterValidator(_not_default_pool)]
# RFC 3339 in UTC, as GKE's maintenance policy takes it.
UtcTime = Annotated[str, matching(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", "a UTC time such as 2026-01-03T01:00:00Z")]


# GKE cluster names are 1-40 lowercase letters, digits and '-', starting with a letter (GKE API, Cluster.name);
# the node service account's ID `<name>-nodes` must be 6-30 characters of the same, starting with a letter (IAM
# API, serviceAccounts.create accountId). clouds/gke/cluster.py cuts that ID at 30 characters, which for
# longer names can end it in '-' or give two clusters of a project one account: so at most 30 - 6 = 24.
GKE_NAME_MAX = 24
GkeClusterName = Annotated[str, matching(rf"[a-z]([-a-z0-9]{{0,{GKE_NAME_MAX - 2}}}[a-z0-9])?",
                                         f"a GKE cluster name: at most {GKE_NAME_MAX} lowercase letters, digits "
                                         "and '-', starting with a letter and ending with a letter or digit (its "
                                         "node service account is <name>-nodes, at most 30 characters)")]


def check_n1_size(machine_type: str, accelerator: str, gpus: int, limits: dict[int, tuple[int, int]]) -> None:
    """ValueError unless an N1 machine is small enough for its GPUs, naming the count that would take it."""
    shape = re.fullmatch(r"n1-(standard|highmem|highcpu)-(\d+)", machine_type)
    if shape is None:
        raise ValueError(f"{machine_type} takes no GPUs: attach them to n1-standard-*, n1-highmem-* or n1-highcpu-*")
    vcpus = int(shape.group(2))
    memory = vcpus * N1_MEMORY_PER_VCPU[shape.group(1)]
    most_vcpus, most_memory = limits[gpus]
    if vcpus > most_vcpus or memory > most_memory:
        enough = [count for count, (cpus, gb) in limits.items() if vcpus <= cpus and memory <= gb]
        fix = f"attach {enough[0]} GPUs or use a smaller machine" if enough else "use a smaller machine"
        raise ValueError(f"{gpus} {accelerator} attach to N1 machines of at most {most_vcpus} vCPUs and "
                         f"{most_memory} GB; {machine_type} has {vcpus} vCPUs and {memory:g} GB: {fix}")


def machine_gpus(machine_type: str, accelerator: str | None, gpus: int | None) -> tuple[str, int]:
    """The accelerator and GPU count of a pool's machine type, or ValueError naming what would be valid."""
    if machine_type.startswith("n1-"):
        if accelerator not in N1_ACCELERATORS:
            raise ValueError(f"an N1 machine carries the GPUs given to it: set accelerator to one of "
                             f"{', '.join(N1_ACCELERATORS)}")
        limits = N1_ACCELERATORS[accelerator]
        if gpus is None or gpus not in limits:
            raise ValueError(f"{accelerator} attaches to N1 machines {', '.join(map(str, limits))} at a time; set "
                             f"gpusPerNode to one of those (got {gpus})")
        check_n1_size(machine_type, accelerator, gpus, limits)
        return accelerator, gpus
    machine = GPU_MACHINES.get(machine_type)
    if machine is None:
        raise ValueError(f"{machine_type!r} is not a GPU machine type this platform knows; use g2-standard-*, "
                         "a2-highgpu-*, a2-ultragpu-*, a3-*, a4-highgpu-8g or n1-* with an accelerator")
    if accelerator not in (None, *machine.accelerators):
        raise ValueError(f"{machine_type} carries {machine.accelerators[0]}, not {accelerator}: leave accelerator "
                         "out or change the machine type")
    if gpus not in (None, *machine.counts):
        raise ValueError(f"{machine_type} carries {machine.counts[0]} GPU(s), not {gpus}")
    return machine.accelerators[0], machine.counts[0]


class GkeNetwork(Model):
    """A VPC-native network: nodes, pods and services in their own ranges; private nodes egress through NAT."""

    subnet_cidr: Cidr = "10.10.0.0/20"
    pods_cidr: Cidr = "10.16.0.0/14"
    services_cidr: Cidr = "10.20.0.0/20"
    # The control plane's private range (a /28 that overlaps nothing else).
    master_cidr: Cidr = "172.16.0.32/28"
    # Where the subnets of multi-node pools' GPU NICs are cut from: a /18 per multi-node pool, in the order of
    # gpuPools (used only when there is one; GKE's GPUDirect guides use 192.168.0.0/16 the same way).
    gpu_nics_cidr: Cidr = "192.168.0.0/16"

    @field_validator("gpu_nics_cidr")
    @classmethod
    def _room_for_a_pool(cls, value: str) -> str:
        if ipaddress.ip_network(value).prefixlen > GPU_NIC_POOL_PREFIX:
            raise ValueError(f"{value} is smaller than the /{GPU_NIC_POOL_PREFIX} each multi-node pool's GPU NIC "
                             f"subnets take: give a /{GPU_NIC_POOL_PREFIX} or larger, such as 192.168.0.0/16")
        return value

    def gpu_nic_blocks(self) -> list[str]:
        """The /18 of each multi-node pool, in the order of the pools."""
        return [str(block) for block in
                ipaddress.ip_network(self.gpu_nics_cidr).subnets(new_prefix=GPU_NIC_POOL_PREFIX)]

    @field_validator("master_cidr")
    @classmethod
    def _slash_28(cls, value: str) -> str:
        if not value.endswith("/28"):
            raise ValueError(f"{value} must be a /28: GKE gives the control plane exactly that")
        return value

    @model_validator(mode="after")
    def _ranges_apart(self) -> GkeNetwork:
        check_disjoint({"subnetCidr": self.subnet_cidr, "podsCidr": self.pods_cidr,
                        "servicesCidr": self.services_cidr, "masterCidr": self.master_cidr})
        return self


class AuthorizedNetwork(Model):
    cidr: Cidr
    name: str


class GkeSystemPool(Model):
    machine_type: MachineType = "e2-standard-4"
    min_nodes: int = Field(default=1, ge=1)
    max_nodes: int = Field(default=3, ge=1)


class GkeCpuPool(Model):
    """A node pool of general-purpose machines for teams' CPU work, untainted, scaling from zero: the system
    pool is tainted for the platform's controllers and GKE's own, and GPU pools for GPU work."""

    machine_type: MachineType = "e2-standard-8"
    # The most nodes it may have at once, across the region's zones.
    max_nodes: int = Field(default=4, ge=1)


class GkeGpuPool(Model):
    """A GKE node pool with GPUs that scales from zero."""

    name: GkePoolName
    machine_type: MachineType
    # Needed only for N1 machines, which carry the GPUs given to them.
    accelerator: str | None = None
    gpus_per_node: int | None = None
    # Zones of the cluster's region the pool's nodes go to (the cluster's zones when not given).
    zones: Annotated[list[str], unique_items("zone")] | None = None
    max_nodes: int = Field(ge=1, le=1000)
    spot: bool = False
    # A specific Compute Engine reservation of the cluster's project the pool's nodes consume (its machine type
    # and GPUs, in the pool's zones): capacity bought ahead, for machines not sold on demand.
    reservation: DnsLabel | None = None
    disk_size_gb: int = Field(default=200, ge=50, le=65536)
    sharing: GpuSharing = GpuSharing()
    # With migStrategy single: the partition every GPU of the pool is cut into, such as 1g.10gb.
    mig_partition_size: str | None = None
    # Placed for multi-node jobs: full-size A3 or A4 machines in one zone under a compact placement policy, which
    # Kueue admits jobs onto by GKE's topology labels (clouds/gke/topology.py).
    multi_node: bool = False

    @field_validator("zones")
    @classmethod
    def _not_empty(cls, zones: list[str] | None) -> list[str] | None:
        if zones is not None and not zones:
            raise ValueError("an empty zone list places the pool nowhere: leave zones out to use the cluster's")
        return zones

    @model_validator(mode="after")
    def _machine_and_sharing(self) -> GkeGpuPool:
        accelerator, _ = machine_gpus(self.machine_type, self.accelerator, self.gpus_per_node)
        if self.spot and self.reservation:
            raise ValueError("Spot VMs consume no reservation: set spot or reservation, not both")
        ways = NOT_ON_DEMAND.get(self.machine_type)
        if ways and not (self.spot or (self.reservation and "reservation" in ways)):
            how = "spot: true" + (", or reservation: <name> of a reservation of them" if "reservation" in ways else "")
            raise ValueError(f"{self.machine_type} is not sold on demand (Spot or flex-start VMs"
                             f"{', or a reservation' if 'reservation' in ways else ''} only): set {how}")
        check_mig(accelerator, self.sharing)
        slicing = self.sharing.time_slicing
        # GKE shares GPUs its own way; what it cannot do is a config error, not a surprise on the node.
        if slicing is not None and (slicing.rename_by_default or not slicing.fail_requests_greater_than_one):
            raise ValueError("GKE time-sharing advertises shares as nvidia.com/gpu and refuses requests of more than "
                             "one: leave renameByDefault and failRequestsGreaterThanOne at their defaults")
        if slicing is not None and slicing.replicas > GKE_MAX_SHARED_CLIENTS:
            raise ValueError(f"GKE time-shares a GPU between at most {GKE_MAX_SHARED_CLIENTS} pods "
                             f"(maxSharedClientsPerGpu); got replicas {slicing.replicas}")
        if self.sharing.mig_strategy == "mixed":
            raise ValueError("GKE cuts every GPU of a node pool into one partition size: use migStrategy single "
                             "with migPartitionSize, or a pool per partition size")
        profiles = GPU_MODELS[accelerator].mig_profiles
        if self.sharing.mig_strategy == "single" and self.mig_partition_size not in profiles:
            raise ValueError(f"migStrategy single on GKE needs migPartitionSize, one of {accelerator}'s MIG "
                             f"profiles: {', '.join(profiles)} (got {self.mig_partition_size!r})")
        if self.mig_partition_size and self.sharing.mig_strategy != "single":
            raise ValueError("migPartitionSize is set but sharing.migStrategy is not single")
        if self.multi_node:
            self._check_multi_node()
        return self

    def _check_multi_node(self) -> None:
        if self.machine_type not in GPU_FABRICS:
            raise ValueError(f"multiNode: {self.machine_type} has no GPU network between nodes that compact "
                             f"placement serves (no GPUDirect-TCPX, -TCPXO or RDMA NICs); multi-node machine "
                             f"types: {', '.join(sorted(GPU_FABRICS))}")
        if self.zones is None or len(self.zones) != 1:
            raise ValueError("multiNode: a compact placement policy places nodes in one zone: give the pool "
                             "zones: [one zone of the region that has its GPUs]")
        check_multi_node(self.sharing, self.max_nodes)

    @property
    def fabric(self) -> GpuFabric | None:
        """The GPU network between its nodes, which a multi-node pool is given (None for the others)."""
        return GPU_FABRICS[self.machine_type] if self.multi_node else None

    @property
    def accelerator_type(self) -> str:
        return machine_gpus(self.machine_type, self.accelerator, self.gpus_per_node)[0]

    @property
    def gpus(self) -> int:
        return machine_gpus(self.machine_type, self.accelerator, self.gpus_per_node)[1]

    @property
    def mig_partitions(self) -> int:
        """nvidia.com/gpu each GPU advertises when cut into partitions (single strategy: one per partition)."""
        if self.mig_partition_size is None:
            return 1
        return GPU_MODELS[self.accelerator_type].mig_partitions(self.mig_partition_size)

    def gpu_capacity(self) -> int:
        return self.max_nodes * self.gpus * self.sharing.shares_per_gpu * self.mig_partitions


def _utc(time: str) -> datetime:
    return datetime.fromisoformat(time.replace("Z", "+00:00"))


class MaintenanceWindow(Model):
    """When GKE may upgrade the control plane and nodes: a recurring window (RFC 5545 recurrence)."""

    start: UtcTime = "2026-01-03T01:00:00Z"
    end: UtcTime = "2026-01-03T09:00:00Z"
    # Saturdays and Sundays, 01:00 to 09:00 UTC: 16 hours a week, above GKE's minimum of 48 hours in 32 days.
    recurrence: str = "FREQ=WEEKLY;BYDAY=SA,SU"

    @model_validator(mode="after")
    def _ordered(self) -> MaintenanceWindow:
        if self.end <= self.start:
            raise ValueError(f"end {self.end} is not after start {self.start}")
        return self


class MaintenanceExclusion(Model):
    """A time GKE must not upgrade in (a release freeze, a long training run)."""

    name: DnsLabel
    start: UtcTime
    end: UtcTime
    # NO_UPGRADES stops all upgrades for at most 30 days; the narrower scopes may last longer.
    scope: Literal["NO_UPGRADES", "NO_MINOR_UPGRADES", "NO_MINOR_OR_NODE_UPGRADES"] = "NO_UPGRADES"

    @property
    def ends(self) -> datetime:
        return _utc(self.end)

    @model_validator(mode="after")
    def _bounded(self) -> MaintenanceExclusion:
        start, end = _utc(self.start), self.ends
        if end <= start:
            raise ValueError(f"end {self.end} is not after start {self.start}")
        if self.scope == "NO_UPGRADES" and end - start > timedelta(days=30):
            raise ValueError("a NO_UPGRADES exclusion lasts at most 30 days on GKE: shorten it or use scope "
                             "NO_MINOR_UPGRADES")
        return self


class GkeMaintenance(Model):
    window: MaintenanceWindow = MaintenanceWindow()
    exclusions: list[MaintenanceExclusion] = []

    def in_force(self, now: datetime) -> list[MaintenanceExclusion]:
        """The exclusions that have not ended by `now`: an ended one protects nothing any more, and GKE refuses
        an exclusion whose end has passed. They are dropped (with a warning), not refused: a stack file would
        otherwise turn invalid on a date, with no change by anyone, and every later deploy would fail on it."""
        return [exclusion for exclusion in self.exclusions if exclusion.ends > now]

    def ended(self, now: datetime) -> list[str]:
        return [f"mlplatform:cluster.maintenance.exclusions: {exclusion.name} ended {exclusion.end}; it is left "
                "out of the cluster's maintenance policy (remove it from the stack file)"
                for exclusion in self.exclusions if exclusion.ends <= now]


class GkeClusterConfig(GpuPools, Model):
    cloud: Literal["gcp"]
    # The cloud contract (clouds/__init__.py): the config namespaces its stacks may set, and the secrets
    # providers CI decrypts its stacks with (none: CI never deploys this cloud's stacks).
    provider_namespaces: ClassVar[tuple[str, ...]] = ("gcp",)
    ci_secrets_providers: ClassVar[tuple[str, ...]] = ("gcpkms://",)

    def build(self) -> ClusterHandle:
        from clouds.gke.cluster import GkeCluster  # only this cloud's stacks load its SDK
        return GkeCluster(self.name, self).handle

    def unreachable_by(self, deployer: Deployer) -> str | None:
        """A GKE cluster's API admits a deployer by IAM (the DNS endpoint) or by its authorized networks."""
        from clouds.gke.reachability import unreachable
        return unreachable(self, deployer)

    name: GkeClusterName
    environment: Literal["dev", "prod"] = "dev"
    project: GcpProject
    region: GcpRegion
    # The zones of the region the cluster's nodes go to.
    zones: Annotated[list[str], unique_items("zone")]
    kubernetes_version: KubernetesVersion = KUBERNETES_VERSION
    release_channel: Literal["RAPID", "REGULAR", "STABLE"] = "REGULAR"
    network: GkeNetwork = GkeNetwork()
    # Networks that may reach the control plane's IP endpoint; required in prod unless dnsEndpoint is on.
    # GKE takes at most 50 (GKE docs, authorized networks: "up to 50 CIDR ranges").
    master_authorized_networks: list[AuthorizedNetwork] = Field(default=[], max_length=50)
    # GKE's DNS-based control-plane endpoint: reached from anywhere, authorized by IAM alone (no IP allow-list,
    # so it suits hosted CI runners); the IP endpoint then admits only masterAuthorizedNetworks, if any.
    dns_endpoint: bool = False
    # GKE multi-networking, through which pods of multiNode pools attach to their machines' GPU NICs. Set
    # explicitly, not derived from the pools: the cluster cannot turn it on or off in place (Config Connector's
    # ContainerCluster reference marks enableMultiNetworking "Immutable", as the provider's schema forces a new
    # cluster for it), so adding or removing a pool must never replace the cluster by itself.
    multi_networking: bool = False
    # Service accounts that may look at the cluster and change nothing, as EKS's viewRoleArns and readRoleArns:
    # Kubernetes RBAC bindings of the stack's own. viewServiceAccounts get the built-in `view` ClusterRole (no
    # Secrets: CI's pull-request preview account), readServiceAccounts read every object, Secrets and custom
    # resources included (CI's read account on main, whose drift refresh reads Helm's release Secrets and the
    # custom resources the stack owns). Their IAM roles (roles/container.clusterViewer, to reach the API at
    # all) are granted outside the stack, like the accounts themselves.
    view_service_accounts: Annotated[list[ServiceAccountEmail], unique_items("service account")] = []
    read_service_accounts: Annotated[list[ServiceAccountEmail], unique_items("service account")] = []
    system_pool: GkeSystemPool = GkeSystemPool()
    cpu_pool: GkeCpuPool = GkeCpuPool()
    gpu_pools: list[GkeGpuPool] = []
    maintenance: GkeMaintenance = GkeMaintenance()

    @field_validator("read_service_accounts")
    @classmethod
    def _one_binding_per_account(cls, accounts: list[str], info: ValidationInfo) -> list[str]:
        # Read includes view: an account in both would be bound twice, and removing it from one list would
        # leave it the other's access unnoticed.
        if both := sorted(set(accounts) & set(info.data.get("view_service_accounts", []))):
            raise ValueError(f"{', '.join(both)} is in viewServiceAccounts already; list it once (readServiceAccounts "
                             "reads everything viewServiceAccounts does, and Secrets)")
        return accounts

    @model_validator(mode="before")
    @classmethod
    def _no_project_number(cls, data: object) -> object:
        if isinstance(data, dict) and "projectNumber" in data:
            raise ValueError("projectNumber is no longer read: GKE's service agent is named by the project itself "
                             "(the Service Usage API), never by a typed number; remove the key")
        return data

    @field_validator("zones")
    @classmethod
    def _zones(cls, zones: list[str]) -> list[str]:
        if not zones:
            raise ValueError("no zones given: name at least one zone of the region, such as us-central1-a")
        return zones

    @field_validator("gpu_pools")
    @classmethod
    def _unique_pools(cls, pools: list[GkeGpuPool]) -> list[GkeGpuPool]:
        return unique_names(pools, "GPU pool")

    @model_validator(mode="after")
    def _consistent(self) -> GkeClusterConfig:
        for zone in self.zones + [z for pool in self.gpu_pools for z in pool.zones or []]:
            if not re.fullmatch(rf"{re.escape(self.region)}-[a-z]", zone):
                raise ValueError(f"zone {zone!r} is not a zone of {self.region} (such as {self.region}-a)")
        # A regional pool's initial_node_count is per zone: the system pool starts with one node in each zone,
        # and a total maximum below that is refused by GKE when the pool is created.
        if self.system_pool.max_nodes < len(self.zones):
            raise ValueError(f"systemPool.maxNodes {self.system_pool.max_nodes} is below the {len(self.zones)} nodes "
                             f"the system pool starts with (one in each of the zones {', '.join(self.zones)}): set "
                             f"maxNodes to at least {len(self.zones)}, or list fewer zones")
        for index, pool in enumerate(self.gpu_pools):
            try:
                check_gpu_zones(self.region, pool.accelerator_type, pool.zones or self.zones)
            except ValueError as error:
                raise ValueError(f"gpuPools[{index}] ({pool.name}): {error}") from None
        self._check_gpu_nics()
        if self.environment == "prod" and not (self.master_authorized_networks or self.dns_endpoint):
            raise ValueError("masterAuthorizedNetworks: a prod cluster needs the networks that may reach its "
                             "control plane, such as [{cidr: 203.0.113.0/24, name: office}], or dnsEndpoint: true")
        cidrs = [network.cidr for network in self.master_authorized_networks]
        try:
            check_unique(cidrs, "CIDR")
            check_access_cidrs(cidrs, self.environment)
        except ValueError as exc:
            raise ValueError(f"masterAuthorizedNetworks: {exc}") from None
        return self

    @property
    def fabric_pools(self) -> list[GkeGpuPool]:
        """The multi-node pools, each with GPU NICs in VPCs of their own, in the order of gpuPools."""
        return [pool for pool in self.gpu_pools if pool.fabric is not None]

    def gpu_nic_block(self, pool: GkeGpuPool) -> str:
        """The /18 a multi-node pool's GPU NIC subnets are cut from."""
        return self.network.gpu_nic_blocks()[self.fabric_pools.index(pool)]

    def _check_gpu_nics(self) -> None:
        pools = self.fabric_pools
        if not pools:
            return
        if not self.multi_networking:
            raise ValueError(f"gpuPools: {', '.join(pool.name for pool in pools)} attach pods to their GPU NICs "
                             "through GKE multi-networking: set cluster.multiNetworking: true (on a cluster "
                             "created without it, that replaces the cluster: docs/gcp.md, \"GPU networks\")")
        blocks = self.network.gpu_nic_blocks()
        if len(pools) > len(blocks):
            raise ValueError(f"network.gpuNicsCidr {self.network.gpu_nics_cidr} holds the GPU NIC subnets of "
                             f"{len(blocks)} multi-node pools (a /{GPU_NIC_POOL_PREFIX} each); {len(pools)} are "
                             "declared: give a larger range")
        network = self.network
        try:
            check_disjoint({"subnetCidr": network.subnet_cidr, "podsCidr": network.pods_cidr,
                            "servicesCidr": network.services_cidr, "masterCidr": network.master_cidr,
                            "gpuNicsCidr": network.gpu_nics_cidr})
        except ValueError as error:
            raise ValueError(f"network: {error} (gpuNicsCidr holds the multi-node pools' GPU NIC subnets, which "
                             "a node reaches beside its primary subnet)") from None
        for index, pool in enumerate(self.gpu_pools):
            longest = len(self.name) + 1 + len(pool.name) + GPU_NIC_SUFFIX_MAX
            if pool.multi_node and longest > GCE_NAME_MAX:
                raise ValueError(f"gpuPools[{index}] ({pool.name}): its GPU NICs' networks are named "
                                 f"{self.name}-{pool.name}-rdma-7 and the like, {longest} characters, and Compute "
                                 f"Engine names have at most {GCE_NAME_MAX}: shorten the pool's name to at most "
                                 f"{GCE_NAME_MAX - len(self.name) - 1 - GPU_NIC_SUFFIX_MAX} characters")
