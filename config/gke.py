"""The config of a GKE cluster, and the GPU machine types it knows: which accelerators they carry, how many."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from versions import KUBERNETES_VERSION
from config.base import DnsLabel, GpuPools, GpuSharing, Model, PoolName, check_mig, matching, unique_names
from config.eks import Cidr, KubernetesVersion
from config.gpus import GPU_MODELS


@dataclass(frozen=True)
class GpuMachine:
    """GPUs a machine family carries: fixed for A2, A3 and G2; chosen from `counts` for N1."""

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
}
# N1 machines take attached GPUs: T4 in ones, twos or fours, V100 up to eight.
N1_ACCELERATORS = {"nvidia-tesla-t4": (1, 2, 4), "nvidia-tesla-v100": (1, 2, 4, 8)}

GcpProject = Annotated[str, matching(r"[a-z][a-z0-9-]{4,28}[a-z0-9]",
                                     "a Google Cloud project ID (6 to 30 lowercase letters, digits, hyphens)")]
GcpRegion = Annotated[str, matching(r"[a-z]+-[a-z]+\d+", "a Google Cloud region such as us-central1 or europe-west4")]


def machine_gpus(machine_type: str, accelerator: str | None, gpus: int | None) -> tuple[str, int]:
    """The accelerator and GPU count of a pool's machine type, or ValueError naming what would be valid."""
    if machine_type.startswith("n1-"):
        if accelerator not in N1_ACCELERATORS:
            raise ValueError(f"an N1 machine carries the GPUs given to it: set accelerator to one of "
                             f"{', '.join(N1_ACCELERATORS)}")
        counts = N1_ACCELERATORS[accelerator]
        if gpus is None or gpus not in counts:
            raise ValueError(f"{accelerator} attaches to N1 machines {', '.join(map(str, counts))} at a time; set "
                             f"gpusPerNode to one of those (got {gpus})")
        return accelerator, gpus
    machine = GPU_MACHINES.get(machine_type)
    if machine is None:
        raise ValueError(f"{machine_type!r} is not a GPU machine type this platform knows; use g2-standard-*, "
                         "a2-highgpu-*, a2-ultragpu-*, a3-* or n1-* with an accelerator")
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

    @field_validator("master_cidr")
    @classmethod
    def _slash_28(cls, value: str) -> str:
        if not value.endswith("/28"):
            raise ValueError(f"{value} must be a /28: GKE gives the control plane exactly that")
        return value


class AuthorizedNetwork(Model):
    cidr: Cidr
    name: str


class GkeSystemPool(Model):
    machine_type: str = "e2-standard-4"
    min_nodes: int = Field(default=1, ge=1)
    max_nodes: int = Field(default=3, ge=1)


class GkeGpuPool(Model):
    """A GKE node pool with GPUs that scales from zero."""

    name: PoolName
    machine_type: str
    # Needed only for N1 machines, which carry the GPUs given to them.
    accelerator: str | None = None
    gpus_per_node: int | None = None
    # Zones of the cluster's region the pool's nodes go to (the cluster's zones when not given).
    zones: list[str] | None = None
    max_nodes: int = Field(ge=1, le=1000)
    spot: bool = False
    disk_size_gb: int = Field(default=200, ge=50, le=65536)
    sharing: GpuSharing = GpuSharing()
    # With migStrategy single: the partition every GPU of the pool is cut into, such as 1g.10gb.
    mig_partition_size: str | None = None

    @field_validator("zones")
    @classmethod
    def _not_empty(cls, zones: list[str] | None) -> list[str] | None:
        if zones is not None and not zones:
            raise ValueError("an empty zone list places the pool nowhere: leave zones out to use the cluster's")
        return zones

    @model_validator(mode="after")
    def _machine_and_sharing(self) -> GkeGpuPool:
        accelerator, _ = machine_gpus(self.machine_type, self.accelerator, self.gpus_per_node)
        check_mig(accelerator, self.sharing)
        slicing = self.sharing.time_slicing
        # GKE shares GPUs its own way; what it cannot do is a config error, not a surprise on the node.
        if slicing is not None and (slicing.rename_by_default or not slicing.fail_requests_greater_than_one):
            raise ValueError("GKE time-sharing advertises shares as nvidia.com/gpu and refuses requests of more than "
                             "one: leave renameByDefault and failRequestsGreaterThanOne at their defaults")
        if self.sharing.mig_strategy == "mixed":
            raise ValueError("GKE cuts every GPU of a node pool into one partition size: use migStrategy single "
                             "with migPartitionSize, or a pool per partition size")
        profiles = GPU_MODELS[accelerator].mig_profiles
        if self.sharing.mig_strategy == "single" and self.mig_partition_size not in profiles:
            raise ValueError(f"migStrategy single on GKE needs migPartitionSize, one of {accelerator}'s MIG "
                             f"profiles: {', '.join(profiles)} (got {self.mig_partition_size!r})")
        if self.mig_partition_size and self.sharing.mig_strategy != "single":
            raise ValueError("migPartitionSize is set but sharing.migStrategy is not single")
        return self

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


class GkeClusterConfig(GpuPools, Model):
    cloud: Literal["gcp"]
    name: DnsLabel
    environment: Literal["dev", "prod"] = "dev"
    project: GcpProject
    region: GcpRegion
    # The zones of the region the cluster's nodes go to.
    zones: list[str]
    kubernetes_version: KubernetesVersion = KUBERNETES_VERSION
    release_channel: Literal["RAPID", "REGULAR", "STABLE"] = "REGULAR"
    network: GkeNetwork = GkeNetwork()
    # Networks that may reach the control plane; required in prod.
    master_authorized_networks: list[AuthorizedNetwork] = []
    system_pool: GkeSystemPool = GkeSystemPool()
    gpu_pools: list[GkeGpuPool] = []

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
        if self.environment == "prod" and not self.master_authorized_networks:
            raise ValueError("masterAuthorizedNetworks: a prod cluster needs the networks that may reach its "
                             "control plane, such as [{cidr: 203.0.113.0/24, name: office}]")
        return self
