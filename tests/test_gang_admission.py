"""The multi-node admission policies, evaluated offline (cel-python) against Pods, Jobs and JobSets that must pass
or fail; the objects pass the Kubernetes schema and the JobSet CRD, so the table is realistic."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from synth.engine import Synthesis
from synth.render import render_stack
from synth.schema import check_manifests, schemas_of
from synth.applied import crds_of
from tests.cel import admit
from tests.conftest import synth_with
from tests.test_admission import job, namespace, owned, pod
from tests.test_topology import existing_cluster

H100 = {"mlplatform.io/pool": "h100"}
REQUIRED = "kueue.x-k8s.io/podset-required-topology"
PREFERRED = "kueue.x-k8s.io/podset-preferred-topology"


def _team(name: str, gpus: int) -> dict[str, Any]:
    return {"name": name, "quota": {"requests": {"cpu": "64", "memory": "512Gi"}, "gpus": gpus}}


@pytest.fixture(scope="module")
def synthesis(tmp_path_factory) -> Synthesis:
    return synth_with(cluster=existing_cluster(tmp_path_factory), teams=[_team("research", 16), _team("web", 2)])


@pytest.fixture(scope="module")
def policies(synthesis) -> dict[str, dict[str, Any]]:
    (component,) = synthesis.of_type("mlplatform:admission:GangAdmission")
    return {r.inputs["metadata"]["name"].removeprefix("mlplatform-"): r.inputs
            for r in synthesis.of_type("kubernetes:admissionregistration.k8s.io/v1:ValidatingAdmissionPolicy")
            if r.parent == component.urn}


def on_h100(gpus: int = 8, annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    """A pod for pool h100 (8 GPUs per node), by default asking for the block it must start in."""
    made = pod(gpus=gpus, nodeSelector=H100, **spec)
    made["metadata"]["annotations"] = {REQUIRED: "example.com/block"} if annotations is None else annotations
    return made


def indexed(of: dict[str, Any], pods: int = 2) -> dict[str, Any]:
    """The pod as an indexed Job of `pods` pods started together, its annotations on the template."""
    made = job(of)
    made["spec"] |= {"completionMode": "Indexed", "completions": pods, "parallelism": pods}
    made["spec"]["template"]["metadata"] = {"annotations": of["metadata"].get("annotations", {})}
    made["metadata"].pop("annotations", None)
    return made


def jobset(*templates: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A JobSet of one replicated Job per pod given (two pods each), as a torchrun of two nodes is written."""
    return {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
            "metadata": {"name": "llama", "namespace": "research",
                         "labels": {"kueue.x-k8s.io/queue-name": "research"} if labels is None else labels},
            "spec": {"replicatedJobs": [{"name": f"workers-{index}", "replicas": 1,
                                         "template": {"spec": indexed(of)["spec"]}}
                                        for index, of in enumerate(templates)]}}


# (policy, case, object, team namespace, admitted?)
TABLE: list[tuple[str, str, dict[str, Any], str, bool]] = [
    ("multi-node-whole-nodes", "a JobSet of whole h100 nodes", jobset(on_h100()), "research", True),
    ("multi-node-whole-nodes", "an indexed Job of whole h100 nodes", indexed(on_h100()), "research", True),
    ("multi-node-whole-nodes", "a JobSet asking for half a node per pod", jobset(on_h100(gpus=4)), "research",
     False),
    ("multi-node-whole-nodes", "a Job asking for one GPU per pod", indexed(on_h100(gpus=1)), "research", False),
    ("multi-node-whole-nodes", "a pod with its GPUs split over two containers",
     on_h100(gpus=4, containers=[{"name": c, "image": "nvcr.io/nvidia/pytorch:25.01-py3",
                                  "resources": {"limits": {"nvidia.com/gpu": 4}}} for c in ("a", "b")]),
     "research", False),
    ("multi-node-whole-nodes", "one GPU on another pool", indexed(pod(nodeSelector={"mlplatform.io/pool": "l4"})),
     "research", True),
    ("multi-node-whole-nodes", "a pod its Job created", owned(on_h100(gpus=4)), "research", True),
    ("multi-node-names-its-topology", "required: one block", jobset(on_h100()), "research", True),
    ("multi-node-names-its-topology", "preferred: one rack", indexed(on_h100(annotations={
        PREFERRED: "example.com/rack"})), "research", True),
    ("multi-node-names-its-topology", "single-node work, unconstrained", on_h100(annotations={
        "kueue.x-k8s.io/podset-unconstrained-topology": "true"}), "research", True),
    ("multi-node-names-its-topology", "no topology on a multi-node pool", jobset(on_h100(annotations={})),
     "research", False),
    ("multi-node-names-its-topology", "a level the topology lacks", indexed(on_h100(annotations={
        REQUIRED: "cloud.google.com/gce-topology-block"})), "research", False),
    ("multi-node-names-its-topology", "a topology on a pool not placed by it",
     indexed(pod(nodeSelector={"mlplatform.io/pool": "l4"}) | {"metadata": {
         "name": "train", "namespace": "research", "labels": {"kueue.x-k8s.io/queue-name": "research"},
         "annotations": {REQUIRED: "example.com/block"}}}), "research", False),
    ("multi-node-names-its-topology", "a topology and no pool", jobset(on_h100() | {"spec": {
        **on_h100()["spec"], "nodeSelector": {}}}), "research", False),
    ("jobset-through-team-queue", "the team's queue", jobset(on_h100()), "research", True),
    ("jobset-through-team-queue", "no queue label: the namespace's default queue", jobset(on_h100(), labels={}),
     "research", True),
    ("jobset-through-team-queue", "another team's queue",
     jobset(on_h100(), labels={"kueue.x-k8s.io/queue-name": "web"}), "research", False),
]


def _case_id(case: tuple[str, str, dict[str, Any], str, bool]) -> str:
    return f"{case[0]}: {case[1]}"


@pytest.mark.parametrize("case", TABLE, ids=_case_id)
def test_policy_table(policies, case):
    name, _, obj, team, admitted = case
    decision = admit(policies[name], obj, namespace(team))
    assert decision.allowed is admitted, decision.failures
    # Every other multi-node policy admits it: each case breaks at most the rule it is about.
    others = {other: admit(policy, obj, namespace(team)).failures for other, policy in policies.items()
              if other != name}
    assert {other: f for other, f in others.items() if f} == {}


def test_every_policy_has_passing_and_failing_cases(policies):
    assert {case[0] for case in TABLE if case[4]} == set(policies) == {case[0] for case in TABLE if not case[4]}


def test_the_table_is_made_of_valid_kubernetes_objects(synthesis, charts):
    jobset_crds = [c for c in crds_of(render_stack(synthesis)) if c["spec"]["group"] == "jobset.x-k8s.io"]
    report = check_manifests([case[2] for case in TABLE], custom=schemas_of(jobset_crds))
    assert report.errors == [] and report.unchecked == []


def test_messages_say_what_to_change(policies):
    (whole,) = admit(policies["multi-node-whole-nodes"], jobset(on_h100(gpus=4)), namespace("research")).failures
    assert "multi-node pools: h100 (8 GPUs per node)" in whole
    (named,) = admit(policies["multi-node-names-its-topology"], jobset(on_h100(annotations={})),
                     namespace("research")).failures
    assert ("annotate the pod template with kueue.x-k8s.io/podset-required-topology: <level> to start all its pods "
            "within one domain of that level (levels, broadest first: example.com/block, example.com/rack, "
            "kubernetes.io/hostname)") in named
    (queue,) = admit(policies["jobset-through-team-queue"], jobset(on_h100(), labels={
        "kueue.x-k8s.io/queue-name": "web"}), namespace("research")).failures
    assert queue == ("A JobSet in a team namespace goes through the team's Kueue queue: label it "
                     "kueue.x-k8s.io/queue-name: research, or leave the label off for the namespace's default queue.")


def test_the_policies_judge_what_they_read_at_creation_in_team_namespaces(synthesis, policies):
    jobsets = (["jobset.x-k8s.io"], ["jobsets"], ["CREATE"])
    for name, policy in policies.items():
        rules = policy["spec"]["matchConstraints"]["resourceRules"]
        matched = [(r["apiGroups"], r["resources"], r["operations"]) for r in rules]
        # The queue rule reads JobSets' fields: matched to them alone, it type-checks (the API server warns of
        # an expression reading a field the matched kind lacks, as make e2e showed for Pods).
        assert matched == ([jobsets] if name == "jobset-through-team-queue" else [
            ([""], ["pods"], ["CREATE"]), (["batch"], ["jobs"], ["CREATE"]), jobsets])
    bindings = {r.inputs["spec"]["policyName"]: r.inputs["spec"] for r in synthesis.of_type(
        "kubernetes:admissionregistration.k8s.io/v1:ValidatingAdmissionPolicyBinding")}
    for name in policies:
        assert bindings[f"mlplatform-{name}"]["matchResources"] == {"namespaceSelector": {"matchExpressions": [
            {"key": "mlplatform.io/team", "operator": "Exists"}]}}


def test_without_multi_node_pools_a_topology_requirement_is_refused(local_synth):
    (component,) = local_synth.of_type("mlplatform:admission:GangAdmission")
    policy = next(r.inputs for r in local_synth.children_of(component.urn)
                  if r.inputs.get("metadata", {}).get("name") == "mlplatform-multi-node-names-its-topology")
    asks = indexed(on_h100() | {"spec": {**on_h100()["spec"], "nodeSelector": {"mlplatform.io/pool": "t4"}}})
    failures = admit(policy, asks, namespace("research")).failures
    assert any("none (this cluster has no multi-node pool)" in message for message in failures)
    assert admit(policy, copy.deepcopy(indexed(pod())), namespace("research")).allowed
