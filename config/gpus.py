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


GPU_MODELS: dict[str, GpuModel] = {m.accelerator: m for m in (
    GpuModel("nvidia-tesla-t4", "Tesla-T4", 16, mig_capable=False),
    GpuModel("nvidia-tesla-v100", "Tesla-V100-SXM2-16GB", 16, mig_capable=False),
    GpuModel("nvidia-a10g", "NVIDIA-A10G", 24, mig_capable=False),
    GpuModel("nvidia-l4", "NVIDIA-L4", 24, mig_capable=False),
    GpuModel("nvidia-l40s", "NVIDIA-L40S", 48, mig_capable=False),
    GpuModel("nvidia-tesla-a100", "NVIDIA-A100-SXM4-40GB", 40, mig_capable=True),
    GpuModel("nvidia-a100-80gb", "NVIDIA-A100-SXM4-80GB", 80, mig_capable=True),
    GpuModel("nvidia-h100-80gb", "NVIDIA-H100-80GB-HBM3", 80, mig_capable=True),
    GpuModel("nvidia-h100-mega-80gb", "NVIDIA-H100-80GB-HBM3", 80, mig_capable=True),
    GpuModel("nvidia-h200-141gb", "NVIDIA-H200", 141, mig_capable=True),
)}


def known_accelerator(value: str) -> str:
    """Pydantic validator for an accelerator name."""
    if value not in GPU_MODELS:
        raise ValueError(f"unknown accelerator {value!r}; known: {', '.join(sorted(GPU_MODELS))}")
    return value
