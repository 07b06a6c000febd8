"""The stack configuration, as pydantic models: the one place that says what a stack file may hold.

Keys are camelCase in `Pulumi.<stack>.yaml` (under the `mlplatform:` namespace) and snake_case here.
Every default lives in these models. Unknown keys are errors, so a typo never silently means "default".
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from core.fields import (DNS_SUBDOMAIN, Bytes, CpuMemory, DnsLabel, GroupName, Model, PoolName, matching,
                         positive_quantity, unique_items, unique_names)
from core.deployer import Deployer
from clouds import ClusterConfig
from core.vocabulary import DEFAULT_MONITORING_NAMESPACE, PLATFORM_NAMESPACES, ROOT_COHORT

# ---- teams ----------------------------------------------------------------------------------------------

class TeamQuota(Model):
    """The team namespace's ResourceQuota."""

    requests: CpuMemory
    # Defaults to `requests`: a team may not burst beyond what it reserved.
    limits: CpuMemory | None = None
    # The team's GPU ceiling: the most GPUs its pods may hold at once, its guarantee (queue) plus what it
    # borrows from idle GPUs of its cohort. Counted in the pools' units (time-slicing shares, MIG slices).
    gpus: int = Field(default=0, ge=0)
    pods: int = Field(default=100, ge=1)
    persistent_volume_claims: int = Field(default=20, ge=0)
    storage: Bytes = "1Ti"

    @property
    def effective_limits(self) -> CpuMemory:
        return self.limits or self.requests

    @model_validator(mode="after")
    def _limits_cover_requests(self) -> TeamQuota:
        if over := self.requests.fits_within(self.effective_limits):
            raise ValueError(f"requests exceed limits ({', '.join(over)}); limits must be at least the requests")
        return self


class ContainerDefaults(Model):
    """LimitRange defaults, so that pods without explicit requests are still admitted under the quota."""

    requests: CpuMemory = CpuMemory(cpu="100m", memory="256Mi")
    limits: CpuMemory = CpuMemory(cpu="1", memory="1Gi")

    @model_validator(mode="after")
    def _requests_within_limits(self) -> ContainerDefaults:
        if over := self.requests.fits_within(self.limits):
            raise ValueError(f"default requests exceed default limits ({', '.join(over)})")
        return self


class TeamGroups(Model):
    """Groups of the cluster's identity provider bound to the built-in `edit` and `view` ClusterRoles."""

    edit: Annotated[list[GroupName], unique_items("group")] = []
    view: Annotated[list[GroupName], unique_items("group")] = []


# Namespaces the cluster itself owns: Kubernetes' own (kube-* is reserved for it), kind's volume provisioner,
# and those GKE manages (gke-managed-*, managed Prometheus).
_RESERVED_NAMESPACES = {"default", "local-path-storage", "gmp-system", "gmp-public"}
_RESERVED_PREFIXES = ("kube-", "gke-managed-")
# Namespaces the platform installs its own agents into; neither a team nor monitoring can have them.


def own_namespace(value: str) -> str:
    """A namespace for a team or for monitoring: not one that the cluster or the platform's agents own."""
    if value in _RESERVED_NAMESPACES or value.startswith(_RESERVED_PREFIXES):
        raise ValueError(f"{value!r} is a namespace the cluster owns (default, kube-*, local-path-storage, "
                         "gke-managed-*, gmp-*); choose another name")
    if value in PLATFORM_NAMESPACES:
        raise ValueError(f"{value!r} is a namespace of the platform's own agents ({', '.join(PLATFORM_NAMESPACES)}); "
                         "choose another name")
    return value


def team_cohort(value: str) -> str:
    if value == ROOT_COHORT:
        raise ValueError(f"{value!r} is the Kueue Cohort above every team cohort, which holds the GPUs no team is "
                         "guaranteed; choose another cohort name")
    return value


class TeamQueue(Model):
    """The team's Kueue ClusterQueue: its guarantee, in a cohort whose teams borrow each other's idle GPUs.

    The guarantee (Kueue's nominal quota) is held against pool capacity, and lent to the cohort while idle; the
    ceiling is the team's `quota.gpus`, reached by borrowing. An owner reclaims lent GPUs by preemption.
    """

    # Teams in one cohort borrow each other's idle GPUs (and every team the GPUs no team is guaranteed).
    cohort: Annotated[DnsLabel, AfterValidator(team_cohort)] = "platform"
    # GPUs the team is guaranteed (default: its whole quota.gpus, so it borrows nothing but still lends);
    # the platform puts them in one pool where one has room.
    guaranteed_gpus: int | None = Field(default=None, ge=0)
    # Or the guarantee per GPU pool, placed by hand.
    gpus: dict[str, Annotated[int, Field(ge=0)]] | None = None
    # GPUs of its guarantee, per pool, the team lends to its cohort while idle (default: all of them).
    lending_limit: int | None = Field(default=None, ge=0)
    # Pools only this team may use: no other team's queue admits work there, and admission refuses pods of
    # other teams that select them.
    dedicated_pools: list[DnsLabel] = []

    @model_validator(mode="after")
    def _one_way_to_give_the_guarantee(self) -> TeamQueue:
        if self.gpus is not None and self.guaranteed_gpus is not None:
            raise ValueError("both gpus and guaranteedGpus are set; give the guarantee as a total (guaranteedGpus, "
                             "placed by the platform) or per pool (gpus), not both")
        return self


class Team(Model):
    name: Annotated[DnsLabel, AfterValidator(own_namespace)]
    quota: TeamQuota
    container_defaults: ContainerDefaults = ContainerDefaults()
    groups: TeamGroups = TeamGroups()
    # Pod Security Admission level enforced on the namespace; `restricted` is always warned and audited.
    pod_security: Literal["baseline", "restricted"] = "baseline"
    # The team runs a stack of its own: the platform creates no namespace for it, and the quota is the budget
    # that the team stack's namespaces must fit in.
    own_stack: bool = False
    queue: TeamQueue = TeamQueue()
    # The namespace of the cluster's ingress controller (such as ingress-nginx), for a serving namespace that
    # takes traffic through it; otherwise ingress from outside the namespace stays denied.
    ingress_controller_namespace: DnsLabel | None = None

    @property
    def guaranteed_gpus(self) -> int:
        if self.queue.gpus is not None:
            return sum(self.queue.gpus.values())
        return self.quota.gpus if self.queue.guaranteed_gpus is None else self.queue.guaranteed_gpus

    @model_validator(mode="after")
    def _guarantee_within_ceiling(self) -> Team:
        where = "queue.gpus" if self.queue.gpus is not None else "queue.guaranteedGpus"
        if self.guaranteed_gpus > self.quota.gpus:
            raise ValueError(f"{where}: {self.guaranteed_gpus} guaranteed GPUs, more than the team's quota.gpus "
                             f"({self.quota.gpus}), its ceiling; raise quota.gpus or guarantee less")
        return self

    @model_validator(mode="after")
    def _defaults_fit_quota(self) -> Team:
        if over := self.container_defaults.limits.fits_within(self.quota.effective_limits):
            raise ValueError(f"containerDefaults.limits exceed the quota's limits ({', '.join(over)}), so no "
                             "pod relying on the defaults could ever be admitted; lower the defaults or raise "
                             "quota.limits")
        return self


# ---- clusters -------------------------------------------------------------------------------------------

# ---- the platform stack ---------------------------------------------------------------------------------

_DURATION = re.compile(r"([0-9]+y)?([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?")


def prometheus_duration(value: str) -> str:
    if not value or not _DURATION.fullmatch(value) or not re.search(r"[1-9]", value):
        raise ValueError(f"{value!r} is not a Prometheus duration; use units y, w, d, h, m, s, ms in that order, "
                         "such as 15d, 12h or 2w3d")
    return value


def storage_class_name(value: str) -> str:
    if len(value) > 253 or not DNS_SUBDOMAIN.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid StorageClass name: use lowercase letters, digits, '-' and '.', "
                         "starting and ending with a letter or digit, at most 253 characters (e.g. gp3, premium-rwo)")
    return value


class MonitoringConfig(Model):
    namespace: Annotated[DnsLabel, AfterValidator(own_namespace)] = DEFAULT_MONITORING_NAMESPACE
    # How long Prometheus keeps samples.
    retention: Annotated[str, AfterValidator(prometheus_duration)] = "15d"
    # Prometheus's volume, where the cluster keeps volumes (not on kind, whose volumes die with it).
    storage_size: Annotated[Bytes, AfterValidator(positive_quantity)] = "50Gi"
    # The StorageClass of that volume; the cluster's default class when not given.
    storage_class: Annotated[str, AfterValidator(storage_class_name)] | None = None
    prometheus_requests: CpuMemory = CpuMemory(cpu="500m", memory="2Gi")
    # What one GPU-hour costs in each GPU pool (any one currency; spot and on-demand pools may differ): the GPU
    # dashboard prices each team's allocated and idle GPU time with it. Pools without a price show hours only.
    gpu_prices: dict[PoolName, Annotated[float, Field(gt=0)]] = {}


class AdmissionConfig(Model):
    """The platform's admission policies in team namespaces (ValidatingAdmissionPolicies)."""

    # deny: violations are refused (and audited); warn: the user is warned and the request audited.
    # Default: deny in a prod environment, warn everywhere else.
    enforcement: Literal["deny", "warn"] | None = None


class CapacityConfig(Model):
    # Allow the teams' GPU quotas to add up to more than the GPU pools can hold (a warning, not an error).
    allow_overcommit: bool = False


class PlatformConfig(Model):
    cluster: ClusterConfig
    monitoring: MonitoringConfig = MonitoringConfig()
    capacity: CapacityConfig = CapacityConfig()
    admission: AdmissionConfig = AdmissionConfig()
    teams: list[Team] = []
    # Where CI previews and deploys the stack from (core/deployer.py).
    deployer: Deployer = Deployer()

    @field_validator("monitoring")
    @classmethod
    def _prices_name_gpu_pools(cls, monitoring: MonitoringConfig, info: ValidationInfo) -> MonitoringConfig:
        cluster = info.data.get("cluster")
        if cluster is not None:
            pools = cluster.gpu_pool_names()
            for pool in monitoring.gpu_prices:
                if pool not in pools:
                    raise ValueError(f"gpuPrices.{pool}: no GPU pool named {pool!r}; the cluster's GPU pools: "
                                     f"{', '.join(pools) or 'none'}")
        return monitoring

    @property
    def admission_enforcement(self) -> Literal["deny", "warn"]:
        if self.admission.enforcement is not None:
            return self.admission.enforcement
        return "deny" if getattr(self.cluster, "environment", "dev") == "prod" else "warn"

    @field_validator("teams")
    @classmethod
    def _teams_are_distinct(cls, teams: list[Team], info: ValidationInfo) -> list[Team]:
        monitoring = info.data.get("monitoring")
        for team in teams:
            if monitoring and team.name == monitoring.namespace:
                raise ValueError(f"team {team.name!r} would share the platform's monitoring namespace; "
                                 "choose another team name")
        return unique_names(teams, "team")

    @property
    def team_gpus(self) -> int:
        """The teams' guaranteed GPUs: what the pools must hold (ceilings are reached by borrowing)."""
        return sum(team.guaranteed_gpus for team in self.teams)


StackName = Annotated[str, matching(r"(([\w.-]+/)?[\w.-]+/)?[\w.-]+",
                                    "a stack name such as organization/mlplatform/dev")]


class TeamStackConfig(Model):
    """A team's own stack: its namespaces, on the cluster of a platform stack, within the budget it grants."""

    # The platform stack, as `pulumi stack ls --all` names it: organization/mlplatform/<stack>.
    platform_stack: StackName
    # The team whose budget (teams[].quota with ownStack in the platform stack) the namespaces share.
    team: DnsLabel
    namespaces: list[Team] = Field(min_length=1)
    # Where CI previews and deploys the stack from: it must reach the platform's Kubernetes API too.
    deployer: Deployer = Deployer()

    @model_validator(mode="after")
    def _namespaces_belong_to_the_team(self) -> TeamStackConfig:
        unique_names(self.namespaces, "namespace")
        for index, namespace in enumerate(self.namespaces):
            if namespace.name != self.team and not namespace.name.startswith(f"{self.team}-"):
                raise ValueError(f"namespaces[{index}].name {namespace.name!r} must be {self.team!r} or start with "
                                 f"'{self.team}-', so that teams cannot take each other's namespaces")
            if namespace.own_stack:
                raise ValueError(f"namespaces[{index}].ownStack belongs in the platform stack's teams, not here")
            if namespace.queue != TeamQueue():
                raise ValueError(f"namespaces[{index}].queue: the team's queue (guarantee, cohort, pools) is set in "
                                 "the platform stack's teams; its namespaces share it, so remove queue here")
        return self

    @property
    def platform_stack_name(self) -> str:
        return self.platform_stack.rsplit("/", 1)[-1]
