"""What every part of the stack config is built from: the base model, names, quantities, GPU pools."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from config.gpus import GPU_MODELS, known_accelerator
from config.quantity import non_negative_quantity, parse_quantity


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, frozen=True)


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def matching(pattern: str, what: str) -> AfterValidator:
    """A validator that takes strings matching `pattern` and otherwise says the value is not `what`."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"{value!r} is not {what}")
        return value

    return AfterValidator(check)


def dns_label(value: str) -> str:
    if len(value) > 63 or not _DNS_LABEL.match(value):
        raise ValueError(
            f"{value!r} is not a valid Kubernetes name (RFC 1123 label): use at most 63 lowercase letters, "
            "digits and '-', starting and ending with a letter or digit"
        )
    return value


def unique_names(items: list, what: str) -> list:
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        if item.name in seen:
            raise ValueError(f"{what} name {item.name!r} is used twice (at [{seen[item.name]}] and [{index}]); "
                             "names must be unique")
        seen[item.name] = index
    return items


DnsLabel = Annotated[str, AfterValidator(dns_label)]
Quantity = Annotated[str, BeforeValidator(non_negative_quantity)]
Accelerator = Annotated[str, AfterValidator(known_accelerator)]


class CpuMemory(Model):
    cpu: Quantity
    memory: Quantity

    def fits_within(self, other: CpuMemory) -> list[str]:
        """The resources of self that exceed other's, as readable phrases (empty when all fit)."""
        return [f"{field} {getattr(self, field)} > {getattr(other, field)}" for field in ("cpu", "memory")
                if parse_quantity(getattr(self, field)) > parse_quantity(getattr(other, field))]


# ---- GPU sharing ----------------------------------------------------------------------------------------

class TimeSlicing(Model):
    """Several pods share one GPU in turns (no memory or fault isolation between them)."""

    # How many pods may share one GPU.
    replicas: int = Field(ge=2, le=64)
    # Advertise the shares as nvidia.com/gpu.shared instead of nvidia.com/gpu, so that pods opt in.
    rename_by_default: bool = False
    # Refuse a pod that asks for more than one share: two shares of one GPU are no faster than one.
    fail_requests_greater_than_one: bool = True


class GpuSharing(Model):
    """How a GPU pool's GPUs are shared: time-slicing, or MIG partitions (per the pool's accelerator)."""

    time_slicing: TimeSlicing | None = None
    # How MIG partitions are advertised: none (whole GPUs), single (as nvidia.com/gpu), mixed (per profile).
    mig_strategy: Literal["none", "single", "mixed"] = "none"

    @model_validator(mode="after")
    def _one_way_of_sharing(self) -> GpuSharing:
        if self.time_slicing is not None and self.mig_strategy != "none":
            raise ValueError(f"both timeSlicing and migStrategy {self.mig_strategy!r} are set; a pool shares its "
                             "GPUs one way: keep timeSlicing, or set migStrategy to single or mixed")
        return self

    @property
    def shares_per_gpu(self) -> int:
        """How many nvidia.com/gpu each physical GPU advertises."""
        if self.time_slicing is None or self.time_slicing.rename_by_default:
            return 1
        return self.time_slicing.replicas


def check_mig(accelerator: str, sharing: GpuSharing) -> None:
    if sharing.mig_strategy != "none" and not GPU_MODELS[accelerator].mig_capable:
        mig_capable = ", ".join(sorted(name for name, gpu in GPU_MODELS.items() if gpu.mig_capable))
        raise ValueError(f"sharing.migStrategy {sharing.mig_strategy!r} needs a MIG-capable GPU, and "
                         f"{accelerator} has no MIG; MIG-capable: {mig_capable}")


class SharedGpus(Model):
    """A GPU pool's accelerator and how its GPUs are shared, checked against each other."""

    accelerator: Accelerator
    sharing: GpuSharing = GpuSharing()

    @model_validator(mode="after")
    def _mig_needs_a_mig_gpu(self) -> SharedGpus:
        check_mig(self.accelerator, self.sharing)
        return self


class ScalingGpuPool(SharedGpus):
    """A GPU pool that scales between minNodes and maxNodes."""

    min_nodes: int = Field(default=0, ge=0)
    max_nodes: int = Field(ge=0)

    @model_validator(mode="after")
    def _max_not_below_min(self) -> ScalingGpuPool:
        if self.max_nodes < self.min_nodes:
            raise ValueError(f"maxNodes ({self.max_nodes}) is below minNodes ({self.min_nodes}); "
                             "maxNodes must be at least minNodes")
        return self


def not_system(value: str) -> str:
    if value == "system":
        raise ValueError("'system' is the name of the system pool; give the GPU pool another name")
    return value


PoolName = Annotated[DnsLabel, AfterValidator(not_system)]


class GpuPools:
    """The GPU capacity of a cluster config whose `gpu_pools` each know their own.

    It declares no field itself: pydantic would then validate gpu_pools before the fields it depends on.
    """

    def gpu_pool_names(self) -> list[str]:
        return [pool.name for pool in self.gpu_pools]  # type: ignore[attr-defined]

    def pool_capacities(self) -> dict[str, int]:
        """nvidia.com/gpu each pool can advertise at its largest."""
        return {pool.name: pool.gpu_capacity() for pool in self.gpu_pools}  # type: ignore[attr-defined]

    def gpu_capacity(self) -> int:
        return sum(self.pool_capacities().values())


def positive_quantity(value: str) -> str:
    if parse_quantity(value) <= 0:
        raise ValueError(f"{value!r} must be more than zero")
    return value
