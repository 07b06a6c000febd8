"""The NVIDIA GPU models the platform knows, by the accelerator name it labels nodes with.

The names follow GKE's accelerator types so that one label value means one GPU model on every cloud.
Cloud tables (EKS instance types, GKE machine types) map onto these entries.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuModel:
    accelerator: str
    # The product name NVIDIA's feature discovery labels nodes with (nvidia.com/gpu.product).
    product: str
    memory_gib: int
    mig_capable: bool
    # MIG partition profiles the GPU can be cut into (compute slices of 7, "g", and memory).
    mig_profiles: tuple[str, ...] = ()

    def mig_partitions(self, profile: str) -> int:
        """How many partitions of a profile one GPU holds: its compute slices go 7, 3, 2 or 1 times into 7."""
        return 7 // int(profile.split("g.")[0])


GPU_MODELS: dict[str, GpuModel] = {m.accelerator: m for m in (
    GpuModel("nvidia-tesla-t4", "Tesla-T4", 16, mig_capable=False),
    GpuModel("nvidia-tesla-v100", "Tesla-V100-SXM2-16GB", 16, mig_capable=False),
    GpuModel("nvidia-a10g", "NVIDIA-A10G", 24, mig_capable=False),
    GpuModel("nvidia-l4", "NVIDIA-L4", 24, mig_capable=False),
    GpuModel("nvidia-l40s", "NVIDIA-L40S", 48, mig_capable=False),
    GpuModel("nvidia-tesla-a100", "NVIDIA-A100-SXM4-40GB", 40, mig_capable=True,
             mig_profiles=("1g.5gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb")),
    GpuModel("nvidia-a100-80gb", "NVIDIA-A100-SXM4-80GB", 80, mig_capable=True,
             mig_profiles=("1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb")),
    GpuModel("nvidia-h100-80gb", "NVIDIA-H100-80GB-HBM3", 80, mig_capable=True,
             mig_profiles=("1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb")),
    GpuModel("nvidia-h100-mega-80gb", "NVIDIA-H100-80GB-HBM3", 80, mig_capable=True,
             mig_profiles=("1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb")),
    GpuModel("nvidia-h200-141gb", "NVIDIA-H200", 141, mig_capable=True,
             mig_profiles=("1g.18gb", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb")),
)}


def known_accelerator(value: str) -> str:
    """Pydantic validator for an accelerator name."""
    if value not in GPU_MODELS:
        raise ValueError(f"unknown accelerator {value!r}; known: {', '.join(sorted(GPU_MODELS))}")
    return value
