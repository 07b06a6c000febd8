"""Whether a deployer can reach an EKS cluster's Kubernetes API, from where its requests come from."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.deployer import Deployer
from core.fields import within

if TYPE_CHECKING:
    from clouds.eks.config import EksClusterConfig


def unreachable(cluster: EksClusterConfig, deployer: Deployer) -> str | None:
    endpoint = cluster.endpoint
    # Unknown sources (a hosted runner) could be anywhere: only an endpoint open to the world admits them.
    sources = deployer.source_cidrs or ["0.0.0.0/0"]
    if endpoint.public and within(sources, endpoint.public_access_cidrs):
        return None
    # The private endpoint resolves inside the VPC only, so it needs a runner there (or routed to it).
    inside = not deployer.hosted
    if inside and set(deployer.security_group_ids) & set(endpoint.private_access_security_group_ids):
        return None
    if inside and deployer.source_cidrs and within(deployer.source_cidrs, endpoint.private_access_cidrs):
        return None
    admitted = (f"public to {', '.join(endpoint.public_access_cidrs)}" if endpoint.public else "not public")
    private = ", ".join([*endpoint.private_access_security_group_ids, *endpoint.private_access_cidrs]) or "nobody"
    return (f"{deployer.describe()} cannot reach the Kubernetes API of {cluster.name}: its endpoint is "
            f"{admitted}, and inside the VPC admits {private}. Either run the deploy on a self-hosted runner in "
            "the network (deployer.runner with the self-hosted label) and name its security group in both "
            "cluster.endpoint.privateAccessSecurityGroupIds and deployer.securityGroupIds (or its subnet in "
            "cluster.endpoint.privateAccessCidrs and deployer.sourceCidrs), or give a runner with static "
            "egress addresses and list them in both cluster.endpoint.publicAccessCidrs and deployer.sourceCidrs")
