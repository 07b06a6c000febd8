"""Whether the teams' queues can admit the multi-node jobs (gangs) their ceilings allow.

Kueue admits a gang all at once, its pods placed within one topology domain, and a domain is never larger
than the pool: a gang on a multi-node pool is some number of whole nodes, no more than the pool holds, and its
GPUs must fit what the team's queue can be admitted there (guarantee plus what its cohort lends). A gang its
ceiling allows but its queue never admits would wait forever without a word; this says so before `up`.
"""

from __future__ import annotations

from config.errors import PROJECT, Overcommit
from config.models import PlatformConfig
from config.queues import QueueLayout, pool_shapes, queue_layout


def largest_gang(layout: QueueLayout, pool: str, gpus: int) -> int:
    """The most whole nodes of `pool` one gang of `gpus` GPUs covers, within one domain (the pool at most)."""
    shape = layout.pools[pool]
    return min(gpus // shape.node_gpus, shape.nodes) if shape.node_gpus else 0


def check_gangs(config: PlatformConfig, stack: str) -> list[str]:
    """Per team and multi-node pool it may use: every gang of 2+ whole nodes within its ceiling (and within the
    pool) must be admissible. Refused where the team is guaranteed GPUs of the pool (it is there for that
    work), a warning where it only borrows; and a multi-node pool on which no team can run any gang is refused.
    `capacity.allowOvercommit` makes the refusals warnings."""
    layout = queue_layout(pool_shapes(config.cluster), config.teams)
    overcommit = Overcommit(stack, config.capacity.allow_overcommit)
    refuse, warnings = overcommit.refuse, overcommit.warnings

    for pool, shape in layout.pools.items():
        if not shape.multi_node:
            continue
        best = 0
        for index, team in enumerate(config.teams):
            share = layout.teams[team.name]
            if pool not in share.pools:
                continue
            if shape.host_access and team.pod_security == "restricted":
                # A baseline namespace admits the pool's GPUDirect pods (components/pod_security.py); a
                # restricted one refuses them, said where it bites rather than at the first job's pod creation.
                warnings.append(f"{PROJECT}:teams[{index}].podSecurity: the team may use multi-node pool "
                                f"{pool!r}, but {shape.host_access}, which Pod Security 'restricted' refuses in its "
                                "namespace: Kueue admits its jobs there, and their pods are refused at creation. "
                                "Set podSecurity: baseline, which admits exactly the pool's GPUDirect pods beyond "
                                "baseline (docs/multi-node.md, \"Pod Security on GPUDirect pools\").")
            wanted = largest_gang(layout, pool, share.ceiling)
            admissible = largest_gang(layout, pool, layout.reach(team.name, pool))
            best = max(best, admissible)
            if wanted < 2 or admissible >= wanted:
                continue
            problem = (f"a gang of {admissible + 1} whole nodes of multi-node pool {pool!r} "
                       f"({(admissible + 1) * shape.node_gpus} GPUs) is within the team's quota.gpus "
                       f"({share.ceiling}) and the pool holds it, but its queue can be admitted at most "
                       f"{layout.reach(team.name, pool)} GPUs there (guarantee plus what the cohort lends), so such "
                       "a job would wait forever.")
            if share.guarantee.get(pool):
                refuse(f"teams[{index}].queue", problem,
                       f"Guarantee the team {wanted * shape.node_gpus} GPUs of {pool} (queue.gpus), lower "
                       f"quota.gpus to {admissible * shape.node_gpus}")
            else:
                warnings.append(f"{PROJECT}:teams[{index}].queue: {problem} Guarantee it GPUs of {pool} "
                                "(queue.gpus) if it runs multi-node jobs there.")
        if best < 2 and config.teams:
            refuse("teams", f"pool {pool!r} is for multi-node jobs, but no team's queue can be admitted two of its "
                   f"nodes ({2 * shape.node_gpus} GPUs) at once, and its pool holds {shape.nodes}.",
                   f"Guarantee a team {2 * shape.node_gpus} GPUs of {pool} (queue.gpus) and give the pool "
                   "maxNodes 2 or more")
    return warnings
