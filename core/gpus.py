"""The NVIDIA GPU models the platform knows, by the accelerator name it labels nodes with.

The names follow GKE's accelerator types so that one label value means one GPU model on every cloud.
Cloud tables (EKS instance types, GKE machine types) map onto these entries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class GpuModel:
    accelerator: str
    # The product name NVIDIA's feature discovery labels nodes with (nvidia.com/gpu.product).
    product: str
    memory_gib: int
    mig_capable: bool
    # The MIG profiles the GPU can be cut into, each with how many of them one GPU holds. Not a formula of the
    # compute slices: memory bounds some profiles too (H100's 1g.20gb takes two of eight memory slices, so four
    # fit, not seven). The numbers are GKE's own partitioner's (GoogleCloudPlatform/container-engine-accelerators,
    # partition_gpu/partition_gpu.go, partitionSizeMaxCount), which match NVIDIA's MIG user guide.
    mig_profiles: Mapping[str, int] = field(default_factory=dict)

    def mig_partitions(self, profile: str) -> int:
        """How many partitions of a profile one GPU holds."""
        return self.mig_profiles[profile]


H100_MIG = {"1g.10gb": 7, "1g.20gb": 4, "2g.20gb": 3, "3g.40gb": 2, "4g.40gb": 1, "7g.80gb": 1}

GPU_MODELS: dict[str, GpuModel] = {m.accelerator: m for m in (
    GpuModel("nvidia-tesla-t4", "Tesla-T4", 16, mig_capable=False),
    GpuModel("nvidia-tesla-v100", "Tesla-V100-SXM2-16GB", 16, mig_capable=False),
    GpuModel("nvidia-a10g", "NVIDIA-A10G", 24, mig_capable=False),
    GpuModel("nvidia-l4", "NVIDIA-L4", 24, mig_capable=False),
    GpuModel("nvidia-l40s", "NVIDIA-L40S", 48, mig_capable=False),
    GpuModel("nvidia-tesla-a100", "NVIDIA-A100-SXM4-40GB", 40, mig_capable=True,
             mig_profiles={"1g.5gb": 7, "2g.10gb": 3, "3g.20gb": 2, "4g.20gb": 1, "7g.40gb": 1}),
    GpuModel("nvidia-a100-80gb", "NVIDIA-A100-SXM4-80GB", 80, mig_capable=True,
             mig_profiles={"1g.10gb": 7, "2g.20gb": 3, "3g.40gb": 2, "4g.40gb": 1, "7g.80gb": 1}),
    GpuModel("nvidia-h100-80gb", "NVIDIA-H100-80GB-HBM3", 80, mig_capable=True,
             mig_profiles=H100_MIG),
    GpuModel("nvidia-h100-mega-80gb", "NVIDIA-H100-80GB-HBM3", 80, mig_capable=True,
             mig_profiles=H100_MIG),
    GpuModel("nvidia-h200-141gb", "NVIDIA-H200", 141, mig_capable=True,
             mig_profiles={"1g.18gb": 7, "1g.35gb": 4, "2g.35gb": 3, "3g.71gb": 2, "4g.71gb": 1, "7g.141gb": 1}),
    # GKE's partitioner names the GPU "NVIDIA B200" (partition_gpu.go, NvidiaB200), which feature discovery labels
    # with '-' for the space; its whole-GPU profile 7g.180gb gives the memory.
    GpuModel("nvidia-b200", "NVIDIA-B200", 180, mig_capable=True,
             mig_profiles={"1g.23gb": 7, "1g.45gb": 4, "2g.45gb": 3, "3g.90gb": 2, "4g.90gb": 1, "7g.180gb": 1}),
)}


def known_accelerator(value: str) -> str:
    """Pydantic validator for an accelerator name."""
    if value not in GPU_MODELS:
        raise ValueError(f"unknown accelerator {value!r}; known: {', '.join(sorted(GPU_MODELS))}")
    return value
