"""The vision team's own stack (docs/team-stacks.md): `up` against the platform stack's outputs (a
StackReference over the same file backend), a preview that shows no changes, its namespaces with the guard
rails and budget the platform granted, then `destroy` that leaves its namespaces gone, not Terminating."""

from __future__ import annotations

from typing import Any

import pytest

from components.admission import QUEUE_LABEL
from core.outputs import PlatformOutputs, TeamOutputs
from core.quantity import parse_quantity
from core.vocabulary import TEAM_LABEL
from e2e.cluster import ApiError
from e2e.lifecycle import TEAM_STACK, Platform

TEAM = "vision"
# e2e/stacks/Pulumi.e2e-vision.yaml's namespaces: name -> (Pod Security level, GPUs, CPU, memory).
NAMESPACES = {"vision-dev": ("baseline", 1, "4", "16Gi"), "vision-serving": ("restricted", 1, "4", "16Gi")}


def items(e2e: Platform, path: str) -> list[dict[str, Any]]:
    return e2e.cluster.get(path)["items"]


def test_team_stack_up(e2e: Platform):
    e2e.pulumi("up", "--yes", "--skip-preview", stack=TEAM_STACK, step="team up")
    outputs = TeamOutputs.read(e2e.pulumi.outputs(TEAM_STACK))
    assert outputs.team == TEAM
    assert sorted(outputs.namespaces) == sorted(NAMESPACES)
    # The budget it was held to is the platform's grant, read by StackReference.
    platform = PlatformOutputs.read(e2e.pulumi.outputs())
    assert outputs.budget == platform.teams[TEAM]
    assert outputs.cluster_name == platform.cluster_name == "e2e"


def test_team_stack_second_preview_shows_no_changes(e2e: Platform):
    e2e.pulumi("preview", "--expect-no-changes", "--diff", stack=TEAM_STACK, step="team preview")


def test_team_namespaces_have_the_guard_rails_within_the_budget(e2e: Platform):
    budget = PlatformOutputs.read(e2e.pulumi.outputs()).teams[TEAM]
    assert budget.own_stack
    gpus = cpu = memory = 0
    for name, (level, ns_gpus, ns_cpu, ns_memory) in NAMESPACES.items():
        labels = e2e.cluster.get(f"/api/v1/namespaces/{name}")["metadata"]["labels"]
        # Labelled as the team's: the admission policies and Kueue's webhooks select it by this label.
        assert labels[TEAM_LABEL] == TEAM
        assert labels["pod-security.kubernetes.io/enforce"] == level
        (quota,) = items(e2e, f"/api/v1/namespaces/{name}/resourcequotas")
        hard = quota["spec"]["hard"]
        assert (hard["requests.nvidia.com/gpu"], hard["requests.cpu"], hard["requests.memory"]) == (
            str(ns_gpus), ns_cpu, ns_memory)
        gpus += int(hard["requests.nvidia.com/gpu"])
        cpu += parse_quantity(hard["requests.cpu"])
        memory += parse_quantity(hard["requests.memory"])
        assert items(e2e, f"/api/v1/namespaces/{name}/limitranges")
        policies = items(e2e, f"/apis/networking.k8s.io/v1/namespaces/{name}/networkpolicies")
        assert any(p["spec"].get("podSelector") == {} and p["spec"].get("ingress") is None for p in policies)
        # Both queues lead to the team's ClusterQueue, which the platform stack made.
        queues = {q["metadata"]["name"]: q["spec"]["clusterQueue"]
                  for q in items(e2e, f"/apis/kueue.x-k8s.io/v1beta2/namespaces/{name}/localqueues")}
        assert queues == {TEAM: TEAM, "default": TEAM}
    assert gpus <= budget.gpus and cpu <= parse_quantity(budget.cpu) and memory <= parse_quantity(budget.memory)
    e2e.cluster.get(f"/apis/kueue.x-k8s.io/v1beta2/clusterqueues/{TEAM}")


def test_the_platforms_admission_policies_cover_the_team_stacks_namespaces(e2e: Platform):
    # Another team's queue, in a namespace the platform stack does not own: the policy binds to it by label.
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "train", "namespace": "vision-dev", "labels": {QUEUE_LABEL: "research"}},
           "spec": {"securityContext": {"runAsNonRoot": True, "runAsUser": 1000,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{"name": "train", "image": "nvcr.io/nvidia/pytorch:25.01-py3",
                                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                                    "securityContext": {"allowPrivilegeEscalation": False,
                                                        "capabilities": {"drop": ["ALL"]}}}]}}
    _, warnings = e2e.cluster.request_as("POST", "/api/v1/namespaces/vision-dev/pods?dryRun=All", pod,
                                         user="carol", groups=["system:masters"])
    assert any("'mlplatform-gpu-work-through-team-queue'" in w and f"label it {QUEUE_LABEL}: vision " in w
               for w in warnings), warnings


def test_team_stack_destroy_leaves_its_namespaces_gone(e2e: Platform):
    e2e.pulumi("destroy", "--yes", "--skip-preview", stack=TEAM_STACK, step="team destroy")
    assert e2e.pulumi.resources(TEAM_STACK) == []
    for name in NAMESPACES:
        # The provider waits for a namespace to be deleted: at the end of destroy it is gone, not Terminating.
        with pytest.raises(ApiError) as gone:
            e2e.cluster.get(f"/api/v1/namespaces/{name}")
        assert gone.value.status == 404, f"namespace {name} is still there"
    # The platform's own are untouched.
    assert e2e.cluster.get(f"/apis/kueue.x-k8s.io/v1beta2/clusterqueues/{TEAM}")
