"""How the teams' GPUs are laid out in Kueue: each team's guarantee per pool, its ceiling, what it lends.

A team's guarantee (Kueue's nominal quota) is held against pool capacity; its ceiling (`quota.gpus`, also its
namespace's ResourceQuota) is what it may reach by borrowing idle GPUs of its cohort, and the GPUs no team is
guaranteed, which a root Cohort above every team cohort holds. The layout is computed
once, here, so that the config checks, the ClusterQueues and the summary all read the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from core.fields import GpuPools, GpuSharing
from config.models import Team
from core.vocabulary import GPU_RESOURCE, SHARED_GPU_RESOURCE



def gpu_resource(sharing: GpuSharing) -> str:
    """The extended resource a pool's GPUs are requested as."""
    if sharing.time_slicing is not None and sharing.time_slicing.rename_by_default:
        return SHARED_GPU_RESOURCE
    return GPU_RESOURCE


def one_share_per_container(sharing: GpuSharing) -> bool:
    """Whether the pool's device plugin gives a container at most one GPU unit: NVIDIA's plugin refuses a
    request for more than one time-sliced share with failRequestsGreaterThanOne, its default (k8s-device-plugin
    v0.20.0 internal/rm/rm.go ValidateRequest, called by Allocate in internal/plugin/server.go)."""
    return sharing.time_slicing is not None and sharing.time_slicing.fail_requests_greater_than_one


@dataclass(frozen=True)
class PoolShape:
    name: str
    # GPU units (shares and MIG slices counted) the pool holds at its largest, and the most one container
    # (so one single-container pod) may be given on one node of it.
    capacity: int
    node_gpus: int
    resource: str = GPU_RESOURCE
    # Time-sliced with one share per container: a pod of several GPUs can never run there.
    shared: bool = False
    # Placed for multi-node jobs (Kueue admits them by topology), with at most this many nodes.
    multi_node: bool = False
    nodes: int = 0
    # What its pods need of their node beyond Pod Security `baseline`, if anything (GKE's GPUDirect pools).
    host_access: str = ""


@dataclass(frozen=True)
class TeamShare:
    """One team's ClusterQueue numbers. `pools` lists the pools it may use, its guaranteed ones first."""

    name: str
    cohort: str
    ceiling: int
    guarantee: dict[str, int]
    lending: dict[str, int]
    pools: tuple[str, ...]

    @property
    def guaranteed(self) -> int:
        return sum(self.guarantee.values())

    @property
    def borrowing(self) -> int:
        """How far beyond its guarantee the team may borrow: Kueue's borrowingLimit in each pool, and of the GPU
        units all its pools' GPUs count as, so that the ceiling holds over every pool together."""
        return max(self.ceiling - self.guaranteed, 0)


@dataclass(frozen=True)
class QueueLayout:
    pools: dict[str, PoolShape]
    teams: dict[str, TeamShare]
    # Pools only one team may use: pool -> team.
    dedicated: dict[str, str]

    @cached_property
    def _lent(self) -> dict[tuple[str, str], int]:
        """GPUs each cohort lends per pool, summed once: a thousand teams would otherwise sum a million times."""
        lent: dict[tuple[str, str], int] = {}
        for share in self.teams.values():
            for pool, amount in share.lending.items():
                lent[(share.cohort, pool)] = lent.get((share.cohort, pool), 0) + amount
        return lent

    @cached_property
    def unguaranteed(self) -> dict[str, int]:
        """Per pool, the GPUs no team is guaranteed: the root Cohort holds them, and every team borrows them."""
        guaranteed: dict[str, int] = {}
        for share in self.teams.values():
            for pool, amount in share.guarantee.items():
                guaranteed[pool] = guaranteed.get(pool, 0) + amount
        return {pool: shape.capacity - guaranteed.get(pool, 0) for pool, shape in self.pools.items()
                if shape.capacity > guaranteed.get(pool, 0)}

    def lendable(self, cohort: str, pool: str, *, besides: str) -> int:
        """GPUs of `pool` a team may borrow: what the other teams of its cohort lend while idle, and the GPUs
        no team is guaranteed."""
        own = self.teams[besides]
        lent = self._lent.get((cohort, pool), 0) - (own.lending.get(pool, 0) if own.cohort == cohort else 0)
        return lent + self.unguaranteed.get(pool, 0)

    def reach(self, team: str, pool: str) -> int:
        """The most GPUs of `pool` a team's queue can be admitted with when its cohort is idle."""
        share = self.teams[team]
        if pool not in share.pools:
            return 0
        own = share.guarantee.get(pool, 0)
        return min(share.ceiling, own + min(share.borrowing, self.lendable(share.cohort, pool, besides=team)))

    def host_access_pools(self, team: str) -> list[str]:
        """The pools the team may use whose pods need more of their node than Pod Security `baseline` allows."""
        return [pool for pool in self.teams[team].pools if self.pools[pool].host_access]

    def resource_ceilings(self, team: str) -> dict[str, int]:
        """Per GPU resource, the most of it the team's queue can ever be admitted with (its ResourceQuota): a
        quota caps each resource alone and cannot say that whole GPUs and renamed shares together stay within
        one ceiling (Kueue's GPU units do), but it holds a resource to what the team's pools of it can give."""
        share = self.teams[team]
        return {resource: min(share.ceiling, sum(self.reach(team, pool) for pool in share.pools
                                                 if self.pools[pool].resource == resource))
                for resource in (GPU_RESOURCE, SHARED_GPU_RESOURCE)}

    def largest_job(self, team: str, *, guaranteed_only: bool = False) -> int:
        """The largest one-node GPU request the team's queue can ever admit (within its guarantee alone)."""
        share = self.teams[team]
        return max((min(self.pools[p].node_gpus, share.guarantee.get(p, 0) if guaranteed_only else self.reach(team, p))
                    for p in share.pools), default=0)

    def largest_node_within(self, team: str, limit: int, *, guaranteed_only: bool = False) -> int:
        """The largest one-node request, up to `limit`, that some pool the team may use (where it is
        guaranteed GPUs) has a node for."""
        share = self.teams[team]
        pools = share.guarantee if guaranteed_only else share.pools
        return min(limit, max((self.pools[p].node_gpus for p in pools), default=0))


def _place(guarantee: int, free: dict[str, int], allowed: Sequence[str], shared: dict[str, bool]) -> dict[str, int]:
    """A guarantee put in one pool where one has room for it (a guarantee split over pools strands
    jobs larger than each part); otherwise spread roomiest-first, and what no pool has room for on the roomiest,
    which the capacity check then reports."""
    if not allowed or not guarantee:
        return {}
    by_room = sorted(allowed, key=lambda p: -free[p])
    # Of the pools with room, the roomiest of whole GPUs before any time-sliced one, whose nodes run no job of
    # several GPUs.
    fitting = [pool for pool in by_room if free[pool] >= guarantee]
    if fitting:
        placed = {min(fitting, key=lambda pool: shared[pool]): guarantee}
    else:
        placed, left = {}, guarantee
        for pool in by_room:
            if left and free[pool] > 0:
                placed[pool] = min(free[pool], left)
                left -= placed[pool]
        if left:
            placed[by_room[0]] = placed.get(by_room[0], 0) + left
    for pool, amount in placed.items():
        free[pool] -= amount
    return placed


def queue_layout(pools: Sequence[PoolShape], teams: Sequence[Team]) -> QueueLayout:
    """Every team's share; guarantees given per pool (`queue.gpus`) are kept, the others placed in config order."""
    shapes = {pool.name: pool for pool in pools}
    dedicated = {pool: team.name for team in teams for pool in team.queue.dedicated_pools}
    free = {pool.name: pool.capacity for pool in pools}
    for team in teams:
        for pool, amount in (team.queue.gpus or {}).items():
            if pool in free:
                free[pool] -= amount
    shares: dict[str, TeamShare] = {}
    for team in teams:
        allowed = [p for p in shapes if dedicated.get(p, team.name) == team.name]
        if team.queue.gpus is not None:
            guarantee = {p: n for p, n in team.queue.gpus.items() if p in shapes and n}
        else:
            guarantee = _place(team.guaranteed_gpus, free, allowed, {p: shapes[p].shared for p in shapes})
        lending = {p: n if team.queue.lending_limit is None else min(team.queue.lending_limit, n)
                   for p, n in guarantee.items()}
        # Kueue tries the flavors in this order (flavorassigner.findFlavorForPodSets): pools of whole GPUs before
        # time-sliced ones, so that a job of several GPUs meets the pools that can run it first; then the team's
        # guaranteed pools first.
        order = tuple(sorted(allowed, key=lambda p: (shapes[p].shared, -guarantee.get(p, 0), allowed.index(p))))
        shares[team.name] = TeamShare(name=team.name, cohort=team.queue.cohort, ceiling=team.quota.gpus,
                                      guarantee=guarantee, lending=lending, pools=order)
    return QueueLayout(pools=shapes, teams=shares, dedicated=dedicated)


def pool_shapes(cluster: GpuPools) -> list[PoolShape]:
    """The GPU pools of a cluster config as the queues see them."""
    shapes = []
    for pool in cluster.gpu_pools:  # type: ignore[attr-defined]
        resource = gpu_resource(pool.sharing)
        # Renamed shares are not nvidia.com/gpu, which gpu_capacity counts: each GPU is `replicas` of them.
        renamed = pool.sharing.time_slicing.replicas if resource == SHARED_GPU_RESOURCE else 1
        capacity = pool.gpu_capacity() * renamed
        # kind's stand-in pools have a fixed number of nodes, the others a largest size.
        nodes = getattr(pool, "max_nodes", None) or getattr(pool, "nodes", 0)
        shared = one_share_per_container(pool.sharing)
        node_gpus = capacity // nodes if nodes else 0
        shapes.append(PoolShape(name=pool.name, capacity=capacity, node_gpus=min(node_gpus, 1) if shared else node_gpus,
                                resource=resource, shared=shared, multi_node=getattr(pool, "multi_node", False),
                                nodes=nodes, host_access=getattr(getattr(pool, "fabric", None), "host_access", "")))
    return shapes
