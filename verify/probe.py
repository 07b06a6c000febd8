"""The Kubernetes objects `make verify` creates: a namespace of its own and one GPU pod per pool."""

from __future__ import annotations

from typing import Any

from core.outputs import PoolOutput
from core.vocabulary import POOL_LABEL
from versions import VERIFY_IMAGE

NAMESPACE = "mlplatform-verify"
PROBE_LABEL = "mlplatform.io/verify"
# Long enough for a node from zero (GPU AMIs are large), short enough that a stuck probe is not left behind.
ACTIVE_DEADLINE_SECONDS = 1800
# nvidia-smi is mounted into the container by the NVIDIA runtime (EKS) or the device plugin (GKE); the fake
# GPU operator on kind mounts none, so its absence is reported rather than fatal there.
PROBE_SCRIPT = ('echo "NVIDIA_VISIBLE_DEVICES=${NVIDIA_VISIBLE_DEVICES:-}"; '
                'if command -v nvidia-smi >/dev/null; then nvidia-smi -L; else echo "nvidia-smi: absent"; fi')


def gpu_resource(pool: PoolOutput) -> str | None:
    """The extended resource one GPU of this pool is requested by; None where no single name exists."""
    sharing = pool.sharing
    if sharing.get("migStrategy") == "mixed":
        return None  # each MIG profile is its own resource (nvidia.com/mig-1g.10gb, ...)
    slicing = sharing.get("timeSlicing") or {}
    return "nvidia.com/gpu.shared" if slicing.get("renameByDefault") else "nvidia.com/gpu"


def namespace() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": NAMESPACE, "labels": {PROBE_LABEL: "true",
                                                       "pod-security.kubernetes.io/enforce": "restricted"}}}


def toleration(taint: str) -> dict[str, str]:
    # The stack output's form of a taint: key=value:Effect.
    key_value, effect = taint.rsplit(":", 1)
    key, _, value = key_value.partition("=")
    return {"key": key, "operator": "Equal", "value": value, "effect": effect}


def gpu_pod(pool: PoolOutput, run_id: str) -> dict[str, Any]:
    """A pod that lands on `pool` only (its labels, its taints tolerated), holds one GPU and exits."""
    resource = gpu_resource(pool)
    if resource is None:
        raise ValueError(f"pool {pool.name} advertises one resource per MIG profile; no single GPU to ask for")
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"gpu-{pool.name}-{run_id}", "namespace": NAMESPACE,
                     "labels": {PROBE_LABEL: "true", POOL_LABEL: pool.name}},
        "spec": {
            "restartPolicy": "Never",
            "activeDeadlineSeconds": ACTIVE_DEADLINE_SECONDS,
            # The pool label alone, as a team's job picks a pool; the node's other labels are checked after.
            "nodeSelector": {POOL_LABEL: pool.name},
            "tolerations": [toleration(taint) for taint in pool.taints],
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "gpu",
                "image": VERIFY_IMAGE,
                "command": ["sh", "-c", PROBE_SCRIPT],
                "resources": {"limits": {resource: "1", "cpu": "100m", "memory": "128Mi"},
                              "requests": {resource: "1", "cpu": "100m", "memory": "128Mi"}},
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            }],
        },
    }
