"""How the teams' GPUs are laid out in Kueue: each team's guarantee per pool, its ceiling, what it lends.

A team's guarantee (Kueue's nominal quota) is held against pool capacity; its ceiling (`quota.gpus`, also its
namespace's ResourceQuota) is what it may reach by borrowing idle GPUs of its cohort. The layout is computed
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


@dataclass(frozen=True)
class PoolShape:
    name: str
    # GPU units (shares and MIG slices counted) the pool holds at its largest, and one node of it.
    capacity: int
    node_gpus: int
    resource: str = GPU_RESOURCE
    # Placed for multi-node jobs (Kueue admits them by topology), with at most this many nodes.
    multi_node: bool = False
    nodes: int = 0


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
        """How far beyond its guarantee, in any one pool, the team may borrow (Kueue's borrowingLimit)."""
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

    def lendable(self, cohort: str, pool: str, *, besides: str) -> int:
        """GPUs of `pool` the other teams of a cohort lend while idle."""
        own = self.teams[besides]
        return self._lent.get((cohort, pool), 0) - (own.lending.get(pool, 0) if own.cohort == cohort else 0)

    def reach(self, team: str, pool: str) -> int:
        """The most GPUs of `pool` a team's queue can be admitted with when its cohort is idle."""
        share = self.teams[team]
        if pool not in share.pools:
            return 0
        own = share.guarantee.get(pool, 0)
        return min(share.ceiling, own + min(share.borrowing, self.lendable(share.cohort, pool, besides=team)))

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


def _place(guarantee: int, free: dict[str, int], allowed: Sequence[str]) -> dict[str, int]:
    """A guarantee put in one pool where one has room for it, the roomiest (a guarantee split over pools strands
    jobs larger than each part); otherwise spread roomiest-first, and what no pool has room for on the roomiest,
    which the capacity check then reports."""
    if not allowed or not guarantee:
        return {}
    by_room = sorted(allowed, key=lambda p: -free[p])
    if free[by_room[0]] >= guarantee:
        placed = {by_room[0]: guarantee}
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
            guarantee = _place(team.guaranteed_gpus, free, allowed)
        lending = {p: n if team.queue.lending_limit is None else min(team.queue.lending_limit, n)
                   for p, n in guarantee.items()}
        order = tuple(sorted(allowed, key=lambda p: (-guarantee.get(p, 0), allowed.index(p))))
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
        shapes.append(PoolShape(name=pool.name, capacity=capacity, node_gpus=capacity // nodes if nodes else 0,
                                resource=resource, multi_node=getattr(pool, "multi_node", False), nodes=nodes))
    return shapes
