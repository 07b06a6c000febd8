"""Gang admissibility: every multi-node job a team's ceiling allows (whole nodes, within one pool) is one its queue
can be admitted, or the stack says so before anything is declared."""

from __future__ import annotations

from typing import Any

import pytest

from config.errors import ConfigError
from tests.conftest import synth_with
from tests.test_topology import EXISTING_POOLS, existing_cluster

# h100: 8 GPUs per node, at most 4 nodes, multi-node; l4: one node of 8 GPUs, to lend.
POOLS = [EXISTING_POOLS[0], EXISTING_POOLS[1] | {"gpusPerNode": 8, "maxNodes": 1}]


def team(name: str, ceiling: int, **queue: Any) -> dict[str, Any]:
    return {"name": name, "quota": {"requests": {"cpu": "64", "memory": "512Gi"}, "gpus": ceiling}, "queue": queue}


def gang_warnings(tmp_path_factory, teams: list[dict[str, Any]], **keys: Any) -> list[str]:
    synthesis = synth_with(cluster=existing_cluster(tmp_path_factory, gpuPools=POOLS), teams=teams, **keys)
    return [w for w in synthesis.warnings if "gang" in w or "multi-node" in w]


# (case, teams, refused: the message it must contain, or None when the stack synthesizes)
TABLE = [
    ("two nodes guaranteed, two allowed", [team("research", 16, gpus={"h100": 16})], None),
    ("the whole pool guaranteed: gangs up to its four nodes", [team("research", 32, gpus={"h100": 32})], None),
    # The rest of the pool is vision's, lent to no one: the root Cohort holds none of it either.
    ("guaranteed one node, ceiling two, nothing to borrow",
     [team("research", 16, gpus={"h100": 8}), team("vision", 24, gpus={"h100": 24}, cohort="vision", lendingLimit=0),
      team("web", 8, gpus={"l4": 8})],
     "teams[0].queue: a gang of 2 whole nodes of multi-node pool 'h100' (16 GPUs) is within the team's quota.gpus "
     "(16) and the pool holds it, but its queue can be admitted at most 8 GPUs there"),
    ("no team can be admitted two nodes", [team("research", 8, gpus={"h100": 8}), team("web", 8, gpus={"l4": 8})],
     "teams: pool 'h100' is for multi-node jobs, but no team's queue can be admitted two of its nodes (16 GPUs)"),
]


@pytest.mark.parametrize(("case", "teams", "refused"), TABLE, ids=[case[0] for case in TABLE])
def test_gang_admissibility(case, teams, refused, tmp_path_factory):
    if refused is None:
        assert gang_warnings(tmp_path_factory, teams) == []
        return
    with pytest.raises(ConfigError) as error:
        synth_with(cluster=existing_cluster(tmp_path_factory, gpuPools=POOLS), teams=teams)
    assert refused in str(error.value)
    # allowOvercommit: the same said as a warning, and the stack synthesizes.
    warnings = gang_warnings(tmp_path_factory, teams, capacity={"allowOvercommit": True})
    assert any(refused.split(": ", 1)[1] in warning for warning in warnings), warnings


def test_a_team_that_only_borrows_a_multi_node_pool_is_warned(tmp_path_factory):
    teams = [team("research", 32, gpus={"h100": 32}), team("web", 16, gpus={"l4": 8})]
    (warning,) = gang_warnings(tmp_path_factory, teams)
    assert warning.startswith("mlplatform:teams[1].queue: a gang of 2 whole nodes of multi-node pool 'h100'")
    assert warning.endswith("Guarantee it GPUs of h100 (queue.gpus) if it runs multi-node jobs there.")
