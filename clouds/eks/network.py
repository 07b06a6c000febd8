"""The network of an EKS cluster: a VPC with private and public subnets in each zone, NAT for egress, and VPC
endpoints so that images and data need not pass through NAT.

Or, for a VPC that exists, only the tags that load balancers look subnets up by (Karpenter takes subnet IDs).
"""

from __future__ import annotations

import ipaddress

import pulumi
import pulumi_aws as aws

from clouds.eks.config import EksClusterConfig

# Karpenter finds the subnets of a VPC we create, and the cluster's security group, by this tag.
DISCOVERY_TAG = "karpenter.sh/discovery"
# Interface endpoints of the option `network.interfaceEndpoints`: image pulls (ECR's API and registry; the
# layers come from S3, through the gateway endpoint), Pod Identity's credentials (eks-auth, which the Pod
# Identity agent calls) and STS for anything that still assumes roles itself.
INTERFACE_ENDPOINTS = ("ecr.api", "ecr.dkr", "eks-auth", "sts")
# Load balancer controllers pick public (elb) and private (internal-elb) subnets by these tags.
PUBLIC_ROLE = {"kubernetes.io/role/elb": "1"}
PRIVATE_ROLE = {"kubernetes.io/role/internal-elb": "1"}


def subnet_cidrs(vpc_cidr: str, zones: int) -> tuple[list[str], list[str]]:
    """Private and public subnets per zone: an eighth of the VPC each for pods (VPC CNI gives pods VPC
    addresses), and small public ones carved from the last eighth for load balancers and NAT."""
    eighths = list(ipaddress.ip_network(vpc_cidr).subnets(prefixlen_diff=3))
    public = list(eighths[-1].subnets(prefixlen_diff=2))
    return [str(block) for block in eighths[:zones]], [str(block) for block in public[:zones]]


class AwsNetwork(pulumi.ComponentResource):
    private_subnet_ids: pulumi.Output[list[str]]
    public_subnet_ids: pulumi.Output[list[str]]
    # How Karpenter's EC2NodeClasses select the private subnets, and the subnets they then launch into (that
    # we created: they must outlive every node Karpenter made).
    karpenter_subnet_terms: list[dict[str, object]]
    private_subnets: list[aws.ec2.Subnet]
    # Everything between a node and EC2's, ECR's and STS's APIs (route tables with their routes and
    # associations, NAT, the internet gateway, endpoints): whatever ends nodes or volumes on a destroy (Karpenter,
    # the EBS CSI driver) depends on all of it, so none of it goes before they are done.
    egress: list[pulumi.Resource]

    def __init__(self, name: str, spec: EksClusterConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlplatform:cluster:AwsNetwork", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cluster_tag = {f"kubernetes.io/cluster/{spec.name}": "shared"}
        network = spec.network

        if network.existing:
            # Subnets we do not own get only the load balancers' tags: their role tag, which other clusters in
            # the VPC may share (so it stays when this stack goes), and this cluster's own tag. No Karpenter
            # discovery tag, which another cluster's Karpenter may own: ours selects subnets by ID.
            kept_tag = pulumi.ResourceOptions(parent=self, retain_on_delete=True)
            for kind, subnet_ids, role in (("private", network.private_subnet_ids, PRIVATE_ROLE),
                                           ("public", network.public_subnet_ids, PUBLIC_ROLE)):
                for index, subnet_id in enumerate(subnet_ids):
                    for key, value in role.items():
                        aws.ec2.Tag(f"{name}-{kind}-{index}-role", resource_id=subnet_id, key=key, value=value,
                                    opts=kept_tag)
                    for key, value in cluster_tag.items():
                        aws.ec2.Tag(f"{name}-{kind}-{index}-cluster", resource_id=subnet_id, key=key, value=value,
                                    opts=child)
            self.private_subnet_ids = pulumi.Output.from_input(network.private_subnet_ids)
            self.public_subnet_ids = pulumi.Output.from_input(network.public_subnet_ids)
            self.karpenter_subnet_terms = [{"id": subnet_id} for subnet_id in network.private_subnet_ids]
            self.private_subnets = []
            self.egress = []
            self.register_outputs({})
            return

        vpc = aws.ec2.Vpc(f"{name}-vpc", cidr_block=network.vpc_cidr, enable_dns_hostnames=True,
                          enable_dns_support=True, tags={"Name": spec.name}, opts=child)
        gateway = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, tags={"Name": spec.name}, opts=child)
        egress: list[pulumi.Resource] = [gateway]
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
                tags={"Name": f"{spec.name}-public-{zone}"} | PUBLIC_ROLE | cluster_tag,
                opts=child)
            # NAT reaches the internet through the public subnet's route to the gateway.
            egress.append(aws.ec2.RouteTableAssociation(f"{name}-public-{zone}", subnet_id=subnet.id,
                                                        route_table_id=public_routes.id, opts=child))
            public.append(subnet)
            if network.nat_gateways == "perZone" or not nats:
                address = aws.ec2.Eip(f"{name}-nat-{zone}", domain="vpc", tags={"Name": f"{spec.name}-nat-{zone}"},
                                      opts=child)
                nats.append(aws.ec2.NatGateway(f"{name}-nat-{zone}", allocation_id=address.id, subnet_id=subnet.id,
                                               tags={"Name": f"{spec.name}-nat-{zone}"},
                                               opts=pulumi.ResourceOptions(parent=self, depends_on=[gateway])))

        private_routes = []
        for index, zone in enumerate(spec.availability_zones):
            nat = nats[index] if network.nat_gateways == "perZone" else nats[0]
            subnet = aws.ec2.Subnet(
                f"{name}-private-{zone}", vpc_id=vpc.id, cidr_block=private_cidrs[index], availability_zone=zone,
                tags={"Name": f"{spec.name}-private-{zone}", DISCOVERY_TAG: spec.name} | PRIVATE_ROLE | cluster_tag,
                opts=child)
            routes = aws.ec2.RouteTable(
                f"{name}-private-{zone}", vpc_id=vpc.id,
                routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", nat_gateway_id=nat.id)],
                tags={"Name": f"{spec.name}-private-{zone}"}, opts=child)
            egress.append(aws.ec2.RouteTableAssociation(f"{name}-private-{zone}", subnet_id=subnet.id,
                                                        route_table_id=routes.id, opts=child))
            private.append(subnet)
            private_routes.append(routes)

        egress += [public_routes, *nats, *private_routes]
        # S3 through a gateway endpoint: free, and ECR's image layers and training data stop paying NAT per GB.
        egress.append(aws.ec2.VpcEndpoint(
            f"{name}-s3", vpc_id=vpc.id, service_name=f"com.amazonaws.{spec.region}.s3", vpc_endpoint_type="Gateway",
            route_table_ids=[r.id for r in private_routes], tags={"Name": f"{spec.name}-s3"}, opts=child))
        if network.interface_endpoints:
            endpoint_group = aws.ec2.SecurityGroup(
                f"{name}-endpoints", vpc_id=vpc.id, description=f"HTTPS from {spec.name}'s VPC to its endpoints",
                ingress=[aws.ec2.SecurityGroupIngressArgs(protocol="tcp", from_port=443, to_port=443,
                                                          cidr_blocks=[network.vpc_cidr])],
                tags={"Name": f"{spec.name}-endpoints"}, opts=child)
            egress += [aws.ec2.VpcEndpoint(
                f"{name}-{service.replace('.', '-')}", vpc_id=vpc.id,
                service_name=f"com.amazonaws.{spec.region}.{service}", vpc_endpoint_type="Interface",
                subnet_ids=[s.id for s in private], security_group_ids=[endpoint_group.id],
                private_dns_enabled=True, tags={"Name": f"{spec.name}-{service}"}, opts=child)
                for service in INTERFACE_ENDPOINTS]

        self.private_subnets = private
        self.egress = egress
        self.karpenter_subnet_terms = [{"tags": {DISCOVERY_TAG: spec.name}}]
        self.private_subnet_ids = pulumi.Output.all(*[s.id for s in private])
        self.public_subnet_ids = pulumi.Output.all(*[s.id for s in public])
        self.register_outputs({"vpcId": vpc.id})
