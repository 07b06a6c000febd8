"""The synth's cost per resource stays flat as a stack grows (`make bench` measures it; docs/performance.md).

Timing is too noisy on a shared machine to assert, so these hold the causes of the growth that was measured:
work per team that walked every other team, and the cyclic collector's full passes over the program's heap.
"""

from __future__ import annotations

import asyncio
import gc

import pulumi_kubernetes as k8s
import pytest
from pulumi.runtime import stack

from config.queues import QueueLayout
from policies import rules
from synth import synthesize
from synth.bench import bench_config
from synth.engine import Synthesis
from tests.conftest import run_component

SMALL, LARGE = 4, 16


class _CountingList(list):
    """A list that counts the items handed out by iterating over it."""

    visits = 0

    def __iter__(self):
        for item in super().__iter__():
            self.visits += 1
            yield item


@pytest.fixture(scope="module")
def syntheses_and_queue_work() -> dict[int, tuple[Synthesis, int]]:
    """Each size's synthesis and how often the program asked what a team's cohort lends it."""
    calls = 0
    lendable = QueueLayout.lendable

    def counted(self: QueueLayout, cohort: str, pool: str, *, besides: str) -> int:
        nonlocal calls
        calls += 1
        return lendable(self, cohort, pool, besides=besides)

    result = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(QueueLayout, "lendable", counted)
        for teams in (SMALL, LARGE):
            calls = 0
            result[teams] = (synthesize("bench", config=bench_config(teams)), calls)
    return result


def test_config_checks_do_work_linear_in_the_teams(syntheses_and_queue_work):
    # Summing what every other team lends, for each team, was quadratic: 16 teams cost 16x what 4 did. The
    # cohort's lending is now summed once per cohort and pool, and each team subtracts its own.
    small, large = (syntheses_and_queue_work[n][1] for n in (SMALL, LARGE))
    assert small and large <= 1.2 * small * LARGE / SMALL


def test_the_guardrail_rule_reads_each_resource_a_fixed_number_of_times(syntheses_and_queue_work):
    # Scanning every resource for each team namespace's quota, LimitRange and policy was quadratic.
    visits = {}
    for teams in (SMALL, LARGE):
        synthesis = syntheses_and_queue_work[teams][0]
        resources = _CountingList(rules.Resource(r.type, r.urn, r.inputs) for r in synthesis.resources if r.custom)
        assert rules.team_namespaces_have_guardrails(resources) == []
        visits[teams] = resources.visits / len(resources)
    assert visits[LARGE] <= 1.2 * visits[SMALL]


def test_the_cyclic_collector_waits_until_the_program_has_run():
    # Its full passes walk everything the program has registered so far, more often as that grows.
    seen: list[bool] = []
    run_component(lambda: seen.append(gc.isenabled()))
    assert seen == [False] and gc.isenabled()

    def fails() -> None:
        raise RuntimeError("the program failed")

    with pytest.raises(RuntimeError, match="the program failed"):
        run_component(fails)
    assert gc.isenabled()


def test_the_runtime_awaits_the_registrations_one_by_one_instead_of_polling_every_pending_output(monkeypatch):
    # Polling walked every pending output each time any finished: more of them, more often, as a stack grows.
    polled: list[int] = []
    wait = asyncio.wait

    async def counted(tasks, **kwargs):
        polled.append(len(tasks))
        return await wait(tasks, **kwargs)

    def program() -> None:
        previous = None
        for index in range(20):
            previous = k8s.core.v1.ConfigMap(f"c{index}", data={"previous": previous.id if previous else ""})

    monkeypatch.setattr(stack.asyncio, "wait", counted)
    assert len(run_component(program).resources) == 20
    assert polled == []
