"""`python -m verify.released`: wait, during a destroy, until the cluster has deleted every volume it provisioned.

A dynamically provisioned volume whose reclaim policy is Delete (Prometheus's, the teams') is a cloud disk the
cluster's CSI driver deletes only after its claim is gone: the claim goes with its namespace or its StatefulSet,
and the disk some seconds to minutes later, while the cluster still runs. Deleted any sooner, the cluster would
leave the disks behind, billed and owned by nobody. The GKE cluster runs this when its Kubernetes resources are
gone and before its node pools and control plane go; it reads the kubeconfig from $MLPLATFORM_KUBECONFIG.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

from verify.api import Api, HttpApi, Unreachable, load_kubeconfig

KUBECONFIG_ENV = "MLPLATFORM_KUBECONFIG"
TIMEOUT_SECONDS = 900.0
POLL_SECONDS = 10.0


def deleted_with_the_cluster(api: Api) -> list[str]:
    """The volumes whose disks the cluster deletes (reclaim policy Delete), with the claims that hold them."""
    volumes = api.request("GET", "/api/v1/persistentvolumes")["items"]
    return [f"{v['metadata']['name']} (claim {(v['spec'].get('claimRef') or {}).get('namespace', '-')}/"
            f"{(v['spec'].get('claimRef') or {}).get('name', '-')}, {v.get('status', {}).get('phase', '?')})"
            for v in volumes if v["spec"].get("persistentVolumeReclaimPolicy") == "Delete"]


def wait_released(api: Api, timeout: float = TIMEOUT_SECONDS, poll: float = POLL_SECONDS,
                  clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> list[str]:
    """[] once no such volume is left; the ones left when `timeout` runs out otherwise."""
    deadline = clock() + timeout
    while left := deleted_with_the_cluster(api):
        if clock() >= deadline:
            return left
        sleep(poll)
    return []


def main() -> int:
    api = HttpApi(load_kubeconfig(os.environ[KUBECONFIG_ENV]))
    try:
        left = wait_released(api)
    except Unreachable as exc:
        print(f"error: the cluster's volumes could not be listed, so no disk is known to be deleted: {exc}. Run "
              "the destroy again once the Kubernetes API answers", file=sys.stderr)
        return 1
    if left:
        print(f"error: after {TIMEOUT_SECONDS:.0f} s these volumes still exist, and their disks would outlive the "
              f"cluster: {'; '.join(left)}. Delete their claims (or the claims' namespaces), then run the destroy "
              "again", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
