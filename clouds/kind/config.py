"""The config of a kind cluster: workers that stand in for GPU pools on a laptop."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, field_validator

from core.deployer import Deployer
from core.fields import Accelerator, DnsLabel, GpuPools, Model, PoolName, SharedGpus, unique_names

if TYPE_CHECKING:
    from core.handle import ClusterHandle


class KindGpuPool(SharedGpus):
    """Workers of a kind cluster that stand in for a GPU pool: labelled and tainted like the clouds' pools."""

    name: PoolName
    accelerator: Accelerator = "nvidia-tesla-t4"
    # GPUs each stand-in node advertises (simulated: kind has no GPUs).
    gpus_per_node: int = Field(default=1, ge=1, le=8)
    # kind cannot autoscale: this many workers exist from the start.
    nodes: int = Field(default=1, ge=1, le=4)

    def gpu_capacity(self) -> int:
        return self.nodes * self.gpus_per_node * self.sharing.shares_per_gpu


class KindClusterConfig(GpuPools, Model):
    cloud: Literal["kind"]
    # The cloud contract (clouds/__init__.py): the config namespaces its stacks may set, and the secrets
    # providers CI decrypts its stacks with (none: CI never deploys this cloud's stacks).
    provider_namespaces: ClassVar[tuple[str, ...]] = ("command",)
    ci_secrets_providers: ClassVar[tuple[str, ...]] = ()

    def build(self) -> ClusterHandle:
        from clouds.kind.cluster import KindCluster  # only this cloud's stacks load its SDK
        return KindCluster(self.name, self).handle

    def unreachable_by(self, deployer: Deployer) -> str | None:
        """A kind cluster is reached from the machine that created it: nothing to check."""
        return None

    name: DnsLabel = "mlplatform"
    system_nodes: int = Field(default=1, ge=1, le=3)
    gpu_pools: list[KindGpuPool] = [KindGpuPool(name="gpu")]

    @field_validator("gpu_pools")
    @classmethod
    def _unique_pools(cls, pools: list[KindGpuPool]) -> list[KindGpuPool]:
        strategies = {pool.sharing.mig_strategy for pool in pools}
        if len(strategies) > 1:
            raise ValueError(f"the pools ask for different MIG strategies ({', '.join(sorted(strategies))}); kind's "
                             "simulated GPUs have one MIG strategy for the whole cluster, so give every pool the same")
        return unique_names(pools, "GPU pool")
