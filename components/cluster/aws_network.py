"""The network of an EKS cluster: a VPC with private and public subnets in each zone and NAT for egress.

Or, for a VPC that exists, only the tags EKS and Karpenter look subnets up by.
"""

from __future__ import annotations

import ipaddress

import pulumi
import pulumi_aws as aws

from config.eks import EksClusterConfig

# Karpenter finds the subnets and security groups for new nodes by this tag.
DISCOVERY_TAG = "karpenter.sh/discovery"


def subnet_cidrs(vpc_cidr: str, zones: int) -> tuple[list[str], list[str]]:
    """Private and public subnets per zone: an eighth of the VPC each for pods (VPC CNI gives pods VPC
    addresses), and small public ones carved from the last eighth for load balancers and NAT."""
    eighths = list(ipaddress.ip_network(vpc_cidr).subnets(prefixlen_diff=3))
    public = list(eighths[-1].subnets(prefixlen_diff=2))
    return [str(block) for block in eighths[:zones]], [str(block) for block in public[:zones]]


class AwsNetwork(pulumi.ComponentResource):
    private_subnet_ids: pulumi.Output[list[str]]
    public_subnet_ids: pulumi.Output[list[str]]

    def __init__(self, name: str, spec: EksClusterConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlplatform:cluster:AwsNetwork", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cluster_tag = {f"kubernetes.io/cluster/{spec.name}": "shared"}
        network = spec.network

        if network.existing:
            # Subnets we do not own get only the tags that let Karpenter and load balancers find them.
            for index, subnet_id in enumerate(network.private_subnet_ids):
                aws.ec2.Tag(f"{name}-private-{index}-discovery", resource_id=subnet_id, key=DISCOVERY_TAG,
                            value=spec.name, opts=child)
            self.private_subnet_ids = pulumi.Output.from_input(network.private_subnet_ids)
            self.public_subnet_ids = pulumi.Output.from_input(network.public_subnet_ids)
            self.register_outputs({})
            return

        vpc = aws.ec2.Vpc(f"{name}-vpc", cidr_block=network.vpc_cidr, enable_dns_hostnames=True,
                          enable_dns_support=True, tags={"Name": spec.name}, opts=child)
        gateway = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, tags={"Name": spec.name}, opts=child)
        public_routes = aws.ec2.RouteTable(
            f"{name}-public", vpc_id=vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=gateway.id)],
            tags={"Name": f"{spec.name}-public"}, opts=child)

        private_cidrs, public_cidrs = subnet_cidrs(network.vpc_cidr, len(spec.availability_zones))
        private, public, nats = [], [], []
        for index, zone in enumerate(spec.availability_zones):
            subnet = aws.ec2.Subnet(
                f"{name}-public-{zone}", vpc_id=vpc.id, cidr_block=public_cidrs[index], availability_zone=zone,
                map_public_ip_on_launch=False,
                tags={"Name": f"{spec.name}-public-{zone}", "kubernetes.io/role/elb": "1"} | cluster_tag,
                opts=child)
            aws.ec2.RouteTableAssociation(f"{name}-public-{zone}", subnet_id=subnet.id,
                                          route_table_id=public_routes.id, opts=child)
            public.append(subnet)
            if network.nat_gateways == "perZone" or not nats:
                address = aws.ec2.Eip(f"{name}-nat-{zone}", domain="vpc", tags={"Name": f"{spec.name}-nat-{zone}"},
                                      opts=child)
                nats.append(aws.ec2.NatGateway(f"{name}-nat-{zone}", allocation_id=address.id, subnet_id=subnet.id,
                                               tags={"Name": f"{spec.name}-nat-{zone}"},
                                               opts=pulumi.ResourceOptions(parent=self, depends_on=[gateway])))

        for index, zone in enumerate(spec.availability_zones):
            nat = nats[index] if network.nat_gateways == "perZone" else nats[0]
            subnet = aws.ec2.Subnet(
                f"{name}-private-{zone}", vpc_id=vpc.id, cidr_block=private_cidrs[index], availability_zone=zone,
                tags={"Name": f"{spec.name}-private-{zone}", "kubernetes.io/role/internal-elb": "1",
                      DISCOVERY_TAG: spec.name} | cluster_tag,
                opts=child)
            routes = aws.ec2.RouteTable(
                f"{name}-private-{zone}", vpc_id=vpc.id,
                routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", nat_gateway_id=nat.id)],
                tags={"Name": f"{spec.name}-private-{zone}"}, opts=child)
            aws.ec2.RouteTableAssociation(f"{name}-private-{zone}", subnet_id=subnet.id, route_table_id=routes.id,
                                          opts=child)
            private.append(subnet)

        self.private_subnet_ids = pulumi.Output.all(*[s.id for s in private])
        self.public_subnet_ids = pulumi.Output.all(*[s.id for s in public])
        self.register_outputs({"vpcId": vpc.id})
