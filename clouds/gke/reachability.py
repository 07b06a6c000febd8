"""Whether a deployer can reach a GKE cluster's Kubernetes API, from where its requests come from."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.deployer import Deployer
from core.fields import within

if TYPE_CHECKING:
    from clouds.gke.config import GkeClusterConfig


def unreachable(cluster: GkeClusterConfig, deployer: Deployer) -> str | None:
    authorized = [network.cidr for network in cluster.master_authorized_networks]
    # The DNS endpoint admits any caller Google's IAM lets in; without authorized networks the IP endpoint
    # admits anyone (and prod requires one of the two).
    if cluster.dns_endpoint or not authorized or within(deployer.source_cidrs or ["0.0.0.0/0"], authorized):
        return None
    return (f"{deployer.describe()} cannot reach the Kubernetes API of {cluster.name}: its control plane admits "
            f"only the authorized networks {', '.join(authorized)}. Set cluster.dnsEndpoint: true (reached by "
            "IAM, from any runner), or list the runner's static egress in both cluster.masterAuthorizedNetworks "
            "and deployer.sourceCidrs")
