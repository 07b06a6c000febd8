"""Whether a deployer can reach a GKE cluster's Kubernetes API, from where its requests come from."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from core.deployer import Deployer
from core.fields import within

if TYPE_CHECKING:
    from clouds.gke.config import GkeClusterConfig


def inside_network(cluster: GkeClusterConfig, deployer: Deployer) -> list[str]:
    """The deployer's source ranges in the cluster's own network (its nodes' or pods' ranges): a runner there
    reaches the API's public address through the cluster's Cloud NAT."""
    ranges = [ipaddress.ip_network(cidr) for cidr in (cluster.network.subnet_cidr, cluster.network.pods_cidr)]
    return [cidr for cidr in deployer.source_cidrs
            if any(ipaddress.ip_network(cidr).overlaps(network) for network in ranges)]


def unreachable(cluster: GkeClusterConfig, deployer: Deployer) -> str | None:
    authorized = [network.cidr for network in cluster.master_authorized_networks]
    # The DNS endpoint admits any caller Google's IAM lets in, from wherever it comes; without authorized
    # networks the IP endpoint admits anyone (and prod requires one of the two).
    if cluster.dns_endpoint or not authorized:
        return None
    if inside := inside_network(cluster, deployer):
        # The kubeconfig names the IP endpoint's public address: from inside the network that goes out through
        # Cloud NAT, whose addresses NAT allocates as it needs them (AUTO_ONLY) and no authorized network lists.
        return (f"{deployer.describe()} cannot reach the Kubernetes API of {cluster.name}: it is inside the "
                f"cluster's own network ({', '.join(inside)}), so its requests to the API's public address leave "
                "through Cloud NAT, from addresses NAT allocates and no authorized network lists. Set "
                "cluster.dnsEndpoint: true (reached by IAM, through NAT too), or run the deployer outside the "
                "cluster's network and list its static egress in cluster.masterAuthorizedNetworks and "
                "deployer.sourceCidrs")
    if within(deployer.source_cidrs or ["0.0.0.0/0"], authorized):
        return None
    return (f"{deployer.describe()} cannot reach the Kubernetes API of {cluster.name}: its control plane admits "
            f"only the authorized networks {', '.join(authorized)}. Set cluster.dnsEndpoint: true (reached by "
            "IAM, from any runner), or list the runner's static egress in both cluster.masterAuthorizedNetworks "
            "and deployer.sourceCidrs")
