"""What every part of the stack config is built from: the base model, names, quantities, GPU pools."""

from __future__ import annotations

import ipaddress
import re
import types
import typing
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from versions import KUBERNETES_VERSION, SUPPORTED_KUBERNETES
from core.vocabulary import CPU_POOL, SYSTEM_POOL

from core.gpus import GPU_MODELS, known_accelerator
from core.quantity import non_negative_quantity, parse_quantity


# Pulumi hands numbers to providers as 64-bit floats, exact up to 2**53.
MAX_EXACT_INT = 2**53


def _unwrap_annotation(annotation: Any) -> Any:
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _model_for(members: list[Any], value: dict[str, Any]) -> tuple[type[BaseModel], str] | None:
    """The member of a union of models whose Literal tag field (such as cloud) holds the value's tag, and the tag."""
    for member in members:
        if not (isinstance(member, type) and issubclass(member, BaseModel)):
            continue
        for name, field in member.model_fields.items():
            tag = value.get(field.alias or name)
            if typing.get_origin(field.annotation) is Literal and tag in typing.get_args(field.annotation):
                return member, str(tag)
    return None


def scalar_mistakes(annotation: Any, value: Any, loc: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], str]]:
    """Where YAML gave a boolean for a number or a number for a boolean, walking the raw config along the models.

    pydantic would convert them (`gpus: true` would become 1, `spot: 1` true), so they are found before it runs.
    Also integers too large to reach a cloud intact.
    """
    annotation = _unwrap_annotation(annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            yield from scalar_mistakes(members[0], value, loc)
        elif isinstance(value, dict) and (tagged := _model_for(members, value)):
            # As pydantic does, the location names the union's tag (config.errors reads it so).
            yield from scalar_mistakes(tagged[0], value, (*loc, tagged[1]))
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel) and isinstance(value, dict):
        fields = {field.alias or name: field for name, field in annotation.model_fields.items()}
        for key, item in value.items():
            if key in fields:
                yield from scalar_mistakes(fields[key].annotation, item, (*loc, key))
    elif origin is list and isinstance(value, list):
        for index, item in enumerate(value):
            yield from scalar_mistakes(typing.get_args(annotation)[0], item, (*loc, index))
    elif origin is dict and isinstance(value, dict):
        for key, item in value.items():
            yield from scalar_mistakes(typing.get_args(annotation)[1], item, (*loc, key))
    elif annotation in (int, float) and isinstance(value, bool):
        yield loc, f"expected a number, got the boolean {str(value).lower()}; write a number such as 1"
    elif annotation is bool and isinstance(value, (int, float)) and not isinstance(value, bool):
        yield loc, f"expected true or false, got the number {value}"
    elif annotation in (int, float) and isinstance(value, int) and abs(value) > MAX_EXACT_INT:
        yield loc, f"{value} is too large: Pulumi passes numbers as 64-bit floats, exact up to 2^53"


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, frozen=True)

    @model_validator(mode="after")
    def _max_not_below_min(self) -> Model:
        # Every pool of every cloud that has both bounds: the cloud APIs refuse a maximum below the minimum.
        low, high = getattr(self, "min_nodes", None), getattr(self, "max_nodes", None)
        if isinstance(low, int) and isinstance(high, int) and high < low:
            raise ValueError(f"maxNodes ({high}) is below minNodes ({low}); maxNodes must be at least minNodes")
        return self


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def matching(pattern: str, what: str) -> AfterValidator:
    """A validator that takes strings wholly matching `pattern` (ASCII classes) and otherwise says the value is
    not `what`."""
    compiled = re.compile(pattern, re.ASCII)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"{value!r} is not {what}")
        return value

    return AfterValidator(check)


def dns_label(value: str) -> str:
    if len(value) > 63 or not _DNS_LABEL.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid Kubernetes name (RFC 1123 label): use at most 63 lowercase letters, "
            "digits and '-', starting and ending with a letter or digit"
        )
    return value


def unique_names(items: list, what: str) -> list:
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        if item.name in seen:
            raise ValueError(f"{what} name {item.name!r} is used twice (at [{seen[item.name]}] and [{index}]); "
                             "names must be unique")
        seen[item.name] = index
    return items


def whole_bytes(value: str) -> str:
    """A byte quantity (memory, storage) must be a whole number of bytes: the API server warns of a fractional
    one and rounds it up, so `storage: 100m` (a tenth of a byte) would mean one byte, never 100 megabytes."""
    amount = parse_quantity(value)
    if amount != amount.to_integral_value():
        raise ValueError(f"{value!r} is {amount.normalize():f} bytes, not a whole number of bytes ('m' is a "
                         "thousandth); for megabytes write M (10^6) or Mi (2^20), such as 100Mi")
    return value


DnsLabel = Annotated[str, AfterValidator(dns_label)]
Quantity = Annotated[str, BeforeValidator(non_negative_quantity)]
# Memory and storage: a quantity of whole bytes.
Bytes = Annotated[Quantity, AfterValidator(whole_bytes)]
Accelerator = Annotated[str, AfterValidator(known_accelerator)]


class CpuMemory(Model):
    cpu: Quantity
    memory: Bytes

    def fits_within(self, other: CpuMemory) -> list[str]:
        """The resources of self that exceed other's, as readable phrases (empty when all fit)."""
        return [f"{field} {getattr(self, field)} > {getattr(other, field)}" for field in ("cpu", "memory")
                if parse_quantity(getattr(self, field)) > parse_quantity(getattr(other, field))]


# ---- machine types -------------------------------------------------------------------------------------
# EC2 instance types: a family (a series letter or more, a generation digit, attribute letters, and options after
# '-', as in m7i, c7gn, u-6tb1, m7i-flex, mac2-m2pro), '.', then a size from the list EC2 names sizes with.
_EC2_FAMILY = re.compile(r"[a-z]+[0-9]+[a-z]*(-[a-z0-9]+)?|u-[0-9]+tb[0-9]+")
_EC2_SIZES = ("nano", "micro", "small", "medium", "large", "xlarge", "<n>xlarge", "metal", "metal-<n>xl")
_EC2_SIZE = re.compile(r"nano|micro|small|medium|large|xlarge|[1-9][0-9]*xlarge|metal(-[1-9][0-9]*xl)?")
# Compute Engine machine types: a series (e2, n2d, c3, a3, g2...), a type, a count (GPU machines: count and 'g'),
# and an optional suffix; the shared-core types; custom ones.
_GCE_TYPES = ("standard", "highmem", "highcpu", "megamem", "ultramem", "hypermem", "highgpu", "megagpu",
              "ultragpu", "edgegpu")
_GCE_SHARED = ("micro", "small", "medium")
_GCE_MACHINE = re.compile(rf"[a-z][0-9][a-z]?-({'|'.join(_GCE_TYPES)})-[1-9][0-9]*g?(-lssd|-nolssd|-metal)?"
                          rf"|[a-z][0-9]-({'|'.join(_GCE_SHARED)})|([a-z][0-9][a-z]?-)?custom-[1-9][0-9]*-[1-9][0-9]*(-ext)?")


def _nearest(word: str, words: tuple[str, ...]) -> str | None:
    import difflib

    close = difflib.get_close_matches(word, words, n=1, cutoff=0.6)
    return close[0] if close else None


def ec2_instance_type(value: str) -> str:
    """An EC2 instance type written as EC2 writes them (m7i.large, g5.12xlarge, m7i-flex.xlarge)."""
    family, dot, size = value.partition(".")
    if not dot or not _EC2_FAMILY.fullmatch(family):
        raise ValueError(f"{value!r} is not an EC2 instance type: expected <family>.<size>, such as m7i.large or "
                         "g5.12xlarge")
    if not _EC2_SIZE.fullmatch(size):
        near = _nearest(size, _EC2_SIZES)
        raise ValueError(f"{value!r} is not an EC2 instance type: its size {size!r} is none of "
                         f"{', '.join(_EC2_SIZES)}" + (f"; did you mean {family}.{near}?" if near else ""))
    return value


def gce_machine_type(value: str) -> str:
    """A Compute Engine machine type written as Compute Engine writes them (e2-standard-4, a2-highgpu-1g)."""
    if _GCE_MACHINE.fullmatch(value):
        return value
    parts = value.split("-")
    near = _nearest(parts[1], _GCE_TYPES + _GCE_SHARED) if len(parts) > 1 else None
    fix = f"; did you mean {'-'.join([parts[0], near, *parts[2:]])}?" if near and near != parts[1] else ""
    raise ValueError(f"{value!r} is not a Compute Engine machine type: expected <series>-<type>-<vCPUs> with a type "
                     f"of {', '.join(_GCE_TYPES)} (e2-standard-4, a2-highgpu-1g), <series>-micro/small/medium, or "
                     f"custom-<vCPUs>-<MiB>{fix}")


InstanceType = Annotated[str, AfterValidator(ec2_instance_type)]
MachineType = Annotated[str, AfterValidator(gce_machine_type)]


# ---- GPU sharing ----------------------------------------------------------------------------------------

class TimeSlicing(Model):
    """Several pods share one GPU in turns (no memory or fault isolation between them)."""

    # How many pods may share one GPU.
    replicas: int = Field(ge=2, le=64)
    # Advertise the shares as nvidia.com/gpu.shared instead of nvidia.com/gpu, so that pods opt in.
    rename_by_default: bool = False
    # Refuse a pod that asks for more than one share: two shares of one GPU are no faster than one.
    fail_requests_greater_than_one: bool = True


class GpuSharing(Model):
    """How a GPU pool's GPUs are shared: time-slicing, or MIG partitions (per the pool's accelerator)."""

    time_slicing: TimeSlicing | None = None
    # How MIG partitions are advertised: none (whole GPUs), single (as nvidia.com/gpu), mixed (per profile).
    mig_strategy: Literal["none", "single", "mixed"] = "none"

    @model_validator(mode="after")
    def _one_way_of_sharing(self) -> GpuSharing:
        if self.time_slicing is not None and self.mig_strategy != "none":
            raise ValueError(f"both timeSlicing and migStrategy {self.mig_strategy!r} are set; a pool shares its "
                             "GPUs one way: keep timeSlicing, or set migStrategy to single or mixed")
        return self

    @property
    def shares_per_gpu(self) -> int:
        """How many nvidia.com/gpu each physical GPU advertises."""
        if self.time_slicing is None or self.time_slicing.rename_by_default:
            return 1
        return self.time_slicing.replicas


def check_mig(accelerator: str, sharing: GpuSharing) -> None:
    if sharing.mig_strategy != "none" and not GPU_MODELS[accelerator].mig_capable:
        mig_capable = ", ".join(sorted(name for name, gpu in GPU_MODELS.items() if gpu.mig_capable))
        raise ValueError(f"sharing.migStrategy {sharing.mig_strategy!r} needs a MIG-capable GPU, and "
                         f"{accelerator} has no MIG; MIG-capable: {mig_capable}")


class SharedGpus(Model):
    """A GPU pool's accelerator and how its GPUs are shared, checked against each other."""

    accelerator: Accelerator
    sharing: GpuSharing = GpuSharing()

    @model_validator(mode="after")
    def _mig_needs_a_mig_gpu(self) -> SharedGpus:
        check_mig(self.accelerator, self.sharing)
        return self


def check_multi_node(sharing: GpuSharing, nodes: int) -> None:
    """A multi-node pool runs gangs of whole nodes: its GPUs unshared, and room for two nodes at least."""
    if sharing != GpuSharing():
        raise ValueError("a multiNode pool runs jobs of whole nodes, every GPU of each: remove its sharing (or make "
                         "a second pool for shared GPUs)")
    if nodes < 2:
        raise ValueError(f"a multiNode pool needs room for two nodes at least (it has {nodes}): raise its maxNodes")


class ScalingGpuPool(SharedGpus):
    """A GPU pool that scales between minNodes and maxNodes (Model checks that max is not below min)."""

    min_nodes: int = Field(default=0, ge=0)
    max_nodes: int = Field(ge=0)


def not_system(value: str) -> str:
    # The pools every cluster has besides its GPU pools: their nodes carry the same pool label.
    if value in (SYSTEM_POOL, CPU_POOL):
        raise ValueError(f"'{value}' is the name of the {value} pool every cluster has; give the GPU pool another "
                         "name")
    return value


PoolName = Annotated[DnsLabel, AfterValidator(not_system)]


class GpuPools:
    """The GPU capacity of a cluster config whose `gpu_pools` each know their own.

    It declares no field itself: pydantic would then validate gpu_pools before the fields it depends on.
    """

    def gpu_pool_names(self) -> list[str]:
        return [pool.name for pool in self.gpu_pools]  # type: ignore[attr-defined]

    def pool_capacities(self) -> dict[str, int]:
        """nvidia.com/gpu each pool can advertise at its largest."""
        return {pool.name: pool.gpu_capacity() for pool in self.gpu_pools}  # type: ignore[attr-defined]

    def gpu_capacity(self) -> int:
        return sum(self.pool_capacities().values())


def positive_quantity(value: str) -> str:
    if parse_quantity(value) <= 0:
        raise ValueError(f"{value!r} must be more than zero")
    return value


def check_unique(items: list[Any], what: str) -> list[Any]:
    """Each item once (a zone, a subnet, a role listed twice is a mistake or a duplicate resource at
    `pulumi up`)."""
    seen: dict[Any, int] = {}
    for index, item in enumerate(items):
        if item in seen:
            raise ValueError(f"{what} {item!r} is listed twice (at [{seen[item]}] and [{index}]); list it once")
        seen[item] = index
    return items


def unique_items(what: str) -> AfterValidator:
    """A list validator: see check_unique."""
    return AfterValidator(lambda items: check_unique(items, what))


# ---- networks -------------------------------------------------------------------------------------------

def ipv4_cidr(value: str) -> str:
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a valid CIDR block such as 10.0.0.0/16 ({exc})") from None
    if network.version != 4:
        raise ValueError(f"{value!r} is an IPv6 block; an IPv4 CIDR block such as 10.0.0.0/16 belongs here")
    return str(network)


Cidr = Annotated[str, AfterValidator(ipv4_cidr)]

# In prod, public ranges that may reach a control plane add up to at most this many addresses (a /16): an office,
# a VPN, CI runners; more is the internet, however it is written.
PROD_PUBLIC_ADDRESSES = 2**16
_WORLD = ipaddress.IPv4Network("0.0.0.0/0")


def check_access_cidrs(cidrs: list[str], environment: str) -> None:
    """The one rule for who may reach a control plane (EKS publicAccessCidrs, GKE masterAuthorizedNetworks).

    Judged by the addresses the CIDRs cover, not by how they are written: 0.0.0.0/1 with 128.0.0.0/1 is the
    world. In prod the world is refused, and so are public ranges broader than a /16 in all.
    """
    networks = list(ipaddress.collapse_addresses(ipaddress.IPv4Network(cidr) for cidr in cidrs))
    if environment != "prod":
        return
    if _WORLD in networks:
        raise ValueError(f"a prod cluster's API endpoint may not be open to the world, and {', '.join(cidrs)} cover "
                         "every IPv4 address: list the networks that administer the cluster (office, VPN, CI)")
    # is_global: not wholly inside private, shared (100.64.0.0/10) or reserved space.
    public = sum(net.num_addresses for net in networks if net.is_global)
    if public > PROD_PUBLIC_ADDRESSES:
        raise ValueError(f"a prod cluster's API endpoint may not be open to broad public ranges, and "
                         f"{', '.join(cidrs)} cover {public:,} public addresses, more than a /16 ({PROD_PUBLIC_ADDRESSES:,}) "
                         "in all: list the networks that administer the cluster (office, VPN, CI)")


def check_disjoint(ranges: dict[str, str]) -> None:
    """ValueError naming the first two of these named CIDR ranges that overlap: the clouds refuse overlapping
    node, pod, service and control-plane ranges, since routes to one would capture the other."""
    named = [(name, ipaddress.ip_network(cidr)) for name, cidr in ranges.items()]
    for index, (name, network) in enumerate(named):
        for other, other_network in named[index + 1:]:
            if network.overlaps(other_network):
                raise ValueError(f"{name} {network} overlaps {other} {other_network}; give each range its own "
                                 "addresses")


# ---- Kubernetes names -----------------------------------------------------------------------------------

# apimachinery validation: a label key is an optional DNS subdomain prefix (<= 253) and '/', then a name of at
# most 63 characters; a value is empty or such a name.
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def label_key(value: str) -> str:
    prefix, slash, name = value.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not DNS_SUBDOMAIN.fullmatch(prefix)):
        raise ValueError(f"label key {value!r}: the prefix before '/' must be a DNS subdomain such as example.com")
    if len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        raise ValueError(f"label key {value!r} is not a Kubernetes label key: a name of at most 63 letters, digits, "
                         "'-', '_' and '.', starting and ending with a letter or digit, optionally after a "
                         "prefix/ such as mlplatform.io/pool")
    return value


def label_value(value: str) -> str:
    if value and (len(value) > 63 or not _LABEL_NAME.fullmatch(value)):
        raise ValueError(f"label value {value!r} is not a Kubernetes label value: empty, or at most 63 letters, "
                         "digits, '-', '_' and '.', starting and ending with a letter or digit (quote values "
                         "such as \"true\" or \"2024-01-01\")")
    return value


LabelKey = Annotated[str, AfterValidator(label_key)]
Labels = dict[LabelKey, Annotated[str, AfterValidator(label_value)]]


def group_name(value: str) -> str:
    # Kubernetes takes any non-empty group name, and compares it exactly: spaces at either end never match.
    if not value or value != value.strip() or any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise ValueError(f"{value!r} is not a group name: give the group as the identity provider names it, "
                         "non-empty, without spaces at either end or control characters")
    return value


GroupName = Annotated[str, AfterValidator(group_name)]


# Security groups appear in the deployer's settings as well as in AWS clusters'.
SecurityGroupId = Annotated[str, matching(r"sg-[0-9a-f]{8,17}", "a security group ID such as sg-0123456789abcdef0")]


def kubernetes_minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def supported_kubernetes(value: str) -> str:
    low, high = SUPPORTED_KUBERNETES
    if not re.fullmatch(r"[1-9][0-9]*\.(0|[1-9][0-9]*)", value) or not kubernetes_minor(low) <= kubernetes_minor(value) <= kubernetes_minor(high):
        raise ValueError(f"Kubernetes {value!r} is outside the supported window: give a minor version from "
                         f"{low} to {high}, such as {KUBERNETES_VERSION}")
    return value


KubernetesVersion = Annotated[str, AfterValidator(supported_kubernetes)]


# ---- CIDR math ------------------------------------------------------------------------------------------

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def inside(network: Network, block: Network) -> bool:
    if isinstance(network, ipaddress.IPv4Network) and isinstance(block, ipaddress.IPv4Network):
        return network.subnet_of(block)
    if isinstance(network, ipaddress.IPv6Network) and isinstance(block, ipaddress.IPv6Network):
        return network.subnet_of(block)
    return False


def within(sources: list[str], blocks: list[str]) -> bool:
    """Every source network lies inside one of the blocks."""
    networks = [ipaddress.ip_network(b) for b in blocks]
    return all(any(inside(source, block) for block in networks) for source in map(ipaddress.ip_network, sources))
