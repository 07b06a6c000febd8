"""docs/multi-node.md's walkthrough stays true: its JobSet, read from the page, is a valid JobSet of the pinned
CRD that the policies of an EKS stack with that pool admit in the team's namespace, taking what the stack says
a whole node of the pool is (GPUs, EFA interfaces, huge pages, the nccl-<pool> ConfigMap, a topology level), with a
rendezvous address JobSet really gives rank 0; written for gcp-dev's GPUDirect pool from that stack's outputs, as
"GPUDirect on GKE" says, it passes every policy there, Pod Security's too; and its bandwidth table is
verify/nccl.py's FLOORS."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import yaml

from synth import PROJECT_DIR
from synth.applied import crds_of
from synth.engine import Synthesis
from synth.render import render_stack
from synth.schema import check_manifests, schemas_of
from tests.cel import admit
from tests.conftest import aws_cluster, synth_with, team
from tests.pod_security_cases import indexed
from tests.test_admission import JOB_CONTROLLER, namespace
from verify.nccl import FLOORS

PAGE = PROJECT_DIR / "docs" / "multi-node.md"


def _section(heading: str) -> str:
    text = PAGE.read_text()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def walkthrough_jobset() -> dict[str, Any]:
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", _section("From a training script to a 2-node job"),
                                      flags=re.DOTALL) if "kind: JobSet" in b]
    return yaml.safe_load(block)


@pytest.fixture(scope="module")
def eks() -> Synthesis:
    pool = {"name": "h100", "instanceTypes": ["p5.48xlarge"], "maxNodes": 4, "efa": True}
    return synth_with(cluster=aws_cluster(gpuPools=[pool]), teams=[team("research", 16)])


def _template(jobset: dict[str, Any]) -> dict[str, Any]:
    (replicated,) = jobset["spec"]["replicatedJobs"]
    return replicated["template"]["spec"]["template"]


def _controllers_pod(template: dict[str, Any]) -> dict[str, Any]:
    """A pod of the template as the Job controller creates it for the Indexed Job: owned by its Job, with the
    completion index in every container's environment."""
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "train-node-0-0-abcde", "namespace": "research",
                        "annotations": template["metadata"]["annotations"],
                        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "train-node-0",
                                             "uid": "1", "controller": True}]},
           "spec": copy.deepcopy(template["spec"])}
    indexed(pod)
    return pod


def _judging_pods(policies: dict[str, dict[str, Any]]) -> list[str]:
    return [name for name, policy in policies.items()
            if any("pods" in rule["resources"] for rule in policy["spec"]["matchConstraints"]["resourceRules"])]


def test_the_walkthrough_jobset_is_valid_for_the_pinned_crd(eks, charts):
    crds = [c for c in crds_of(render_stack(eks)) if c["spec"]["group"] == "jobset.x-k8s.io"]
    report = check_manifests([walkthrough_jobset()], custom=schemas_of(crds))
    assert report.errors == [] and report.unchecked == [] and len(report.checked) == 1


def test_the_walkthrough_jobset_is_admitted_in_the_team_namespace(eks):
    jobset = walkthrough_jobset()
    assert jobset["metadata"]["namespace"] == "research"
    policies = {r.inputs["metadata"]["name"].removeprefix("mlplatform-"): r.inputs
                for r in eks.of_type("kubernetes:admissionregistration.k8s.io/v1:ValidatingAdmissionPolicy")}
    for name in ("multi-node-whole-nodes", "multi-node-names-its-topology", "jobset-through-team-queue"):
        decision = admit(policies[name], jobset, namespace("research"))
        assert decision.allowed, (name, decision.failures)
    # Each pod, as the Job controller creates it (owned), by every policy on team pods.
    template = _template(jobset)
    pod, judged = _controllers_pod(template), _judging_pods(policies)
    assert "gpu-work-through-team-queue" in judged and "multi-node-whole-nodes" in judged
    for name in judged:
        decision = admit(policies[name], pod, namespace("research"), user=JOB_CONTROLLER)
        assert decision.allowed, (name, decision.failures)


def test_the_walkthrough_takes_what_the_stack_says_a_whole_node_is(eks):
    (pool,) = [p for p in eks.outputs["gpuPools"] if p["name"] == "h100"]
    template = _template(walkthrough_jobset())
    (container,) = template["spec"]["containers"]
    limits = container["resources"]["limits"]
    # Every GPU, EFA interface and huge page of the node (requests default to limits: huge pages' must equal
    # them), and memory of its own, without which Kubernetes refuses a container's huge pages.
    assert {r: v for r, v in limits.items() if r != "memory"} == {"nvidia.com/gpu": pool["gpusPerNode"],
                                                                  **pool["fabricDevices"], **pool["hugePages"]}
    assert pool["hugePages"] == {"hugepages-2Mi": "42240Mi"} and "memory" in limits
    assert "requests" not in container["resources"]
    assert container["envFrom"] == [{"configMapRef": {"name": pool["ncclConfigMap"]}}]
    # That ConfigMap is in the team's namespace.
    assert [r.inputs["metadata"]["name"] for r in eks.resources if r.inputs.get("kind") == "ConfigMap"
            and r.inputs["metadata"].get("namespace") == "research"] == [pool["ncclConfigMap"]]
    level = template["metadata"]["annotations"]["kueue.x-k8s.io/podset-required-topology"]
    assert level in eks.outputs["topologyLevels"]
    assert template["spec"]["nodeSelector"] == {"mlplatform.io/pool": "h100"}


def test_the_rendezvous_address_is_the_hostname_jobset_gives_rank_0():
    jobset = walkthrough_jobset()
    (replicated,) = jobset["spec"]["replicatedJobs"]
    (container,) = _template(jobset)["spec"]["containers"]
    args = dict(a.removeprefix("--").split("=", 1) for a in container["command"] if a.startswith("--"))
    # JobSet: <jobset>-<replicated job>-<job index>-<pod index>, in the headless Service named after the JobSet.
    name = jobset["metadata"]["name"]
    assert args["master-addr"] == f"{name}-{replicated['name']}-0-0.{name}"
    spec = replicated["template"]["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == int(args["nnodes"])
    assert args["node-rank"] == "$(JOB_COMPLETION_INDEX)"
    assert int(args["nproc-per-node"]) == container["resources"]["limits"]["nvidia.com/gpu"]


def test_the_bandwidth_table_is_the_checks_floors():
    rows = [line.split("|")[1:-1] for line in _section("What bandwidth to expect").splitlines()
            if line.startswith("| ") and not line.startswith("| instance type")]
    documented: dict[str, tuple[int, str]] = {}
    for types, rate, floor, _source in rows:
        gbps = int(re.match(r" ([\d,]+) Gbps", rate).group(1).replace(",", ""))  # type: ignore[union-attr]
        for instance_type in types.strip().split(", "):
            documented[instance_type] = (gbps, floor.strip())
    assert set(documented) == set(FLOORS)
    for instance_type, floor in FLOORS.items():
        gbps, said = documented[instance_type]
        assert gbps == floor.link_gbps, instance_type
        expected = f"{floor.floor_gbs:.0f} GB/s"
        assert said == (f"not judged yet ({expected})" if floor.unjudged else expected), instance_type


def gke_walkthrough(pool: dict[str, Any]) -> dict[str, Any]:
    """The walkthrough's JobSet on a GKE GPUDirect pool, as "GPUDirect on GKE" says to write it: the pool's
    podAnnotations, fabricPod's daemon, volumes, mounts and capabilities, its ConfigMap and whole node, and a
    level of the stack's topology."""
    jobset = walkthrough_jobset()
    template = _template(jobset)
    fabric = pool["fabricPod"]
    template["metadata"]["annotations"] = {**template["metadata"]["annotations"], **pool["podAnnotations"]}
    spec = template["spec"]
    spec["nodeSelector"] = {"mlplatform.io/pool": pool["name"]}
    spec["initContainers"] = fabric["initContainers"]
    spec["volumes"] = fabric["volumes"]
    (container,) = spec["containers"]
    container["volumeMounts"] = fabric["volumeMounts"]
    if fabric["capabilities"]:
        container["securityContext"] = {"capabilities": {"add": fabric["capabilities"]}}
    container["envFrom"] = [{"configMapRef": {"name": pool["ncclConfigMap"]}}]
    container["resources"] = {"limits": {"nvidia.com/gpu": pool["gpusPerNode"]}}
    return jobset


def test_the_walkthrough_on_gcp_dev_is_admitted_with_its_gpudirect_pods():
    # The done-when on gcp-dev: research's 2-node job on the A3 Mega pool, written from the stack's outputs, passes
    # every policy of its namespace, its pods (as the Job controller creates them) Pod Security's too.
    from synth.render import stack_synthesis
    gcp_dev = stack_synthesis("gcp-dev")
    (pool,) = [p for p in gcp_dev.outputs["gpuPools"] if p["name"] == "h100"]
    jobset = gke_walkthrough(pool)
    template = _template(jobset)
    template["metadata"]["annotations"]["kueue.x-k8s.io/podset-required-topology"] = (
        gcp_dev.outputs["topologyLevels"][-2])
    policies = {r.inputs["metadata"]["name"].removeprefix("mlplatform-"): r.inputs
                for r in gcp_dev.of_type("kubernetes:admissionregistration.k8s.io/v1:ValidatingAdmissionPolicy")}
    privileged = namespace("research")
    privileged["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] = "privileged"
    for name, policy in policies.items():
        if any("jobsets" in rule["resources"] for rule in policy["spec"]["matchConstraints"]["resourceRules"]):
            decision = admit(policy, jobset, privileged)
            assert decision.allowed, (name, decision.failures)
    pod, judged = _controllers_pod(template), _judging_pods(policies)
    assert "team-pod-security" in judged and "multi-node-whole-nodes" in judged
    for name in judged:
        decision = admit(policies[name], pod, privileged, user=JOB_CONTROLLER)
        assert decision.allowed, (name, decision.failures)
    # Without the pool's node selector (Kueue's flavor puts it there), the pod gets no GPUDirect share.
    del pod["spec"]["nodeSelector"]
    assert not admit(policies["team-pod-security"], pod, privileged, user=JOB_CONTROLLER).allowed
