"""The policy rules, each with a resource that keeps it and one that breaks it, and as CrossGuard runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pulumi_policy import PolicyResource, PolicyResourceOptions, ResourceValidationArgs, StackValidationArgs
from pulumi_policy.policy import PolicyCustomTimeouts
from pulumi_policy.proxy import (
    UNKNOWN_BOOLEAN_VALUE,
    UNKNOWN_OBJECT_VALUE,
    UNKNOWN_STRING_VALUE,
    UnknownValueError,
    unknown_checking_proxy,
)

from versions import (DCGM_EXPORTER, EFA_DEVICE_PLUGIN, FAKE_GPU_OPERATOR, KUBERNETES_VERSION, NVIDIA_DEVICE_PLUGIN,
                      SUPPORTED_KUBERNETES)
from config.errors import ConfigError
from core.vocabulary import (DEFAULT_MONITORING_NAMESPACE, DEVICE_PLUGIN_NAMESPACE, FAKE_GPU_NAMESPACE, GPU_RESOURCE,
                             GPU_TAINT, KUBE_SYSTEM_NAMESPACE, TEAM_LABEL)
from policies import pack, rules
from synth import PROJECT_DIR
from synth.checks import check, enforcement_levels
from synth.engine import HELM_RELEASE
from tests.conftest import KIND, synth_with, team

RELEASE = rules.HELM_RELEASE
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
GPU_TAINT_K8S = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
GPU_TAINT_CLOUD = {"key": "nvidia.com/gpu", "value": "present", "effect": "NO_SCHEDULE"}


def deployment(**pod_spec) -> dict:
    return {"kind": "Deployment", "metadata": {"name": "app", "namespace": "research"},
            "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "python:3.12"}]} | pod_spec}}}


def gpu_node_pool(taints=(GPU_TAINT_K8S,), limits=None, disruption=None) -> dict:
    return {"kind": "NodePool", "spec": {
        "template": {"spec": {"taints": list(taints), "requirements": [
            {"key": "karpenter.k8s.aws/instance-family", "operator": "In", "values": ["g5"]}]}},
        "limits": {"nvidia.com/gpu": 8} if limits is None else limits,
        "disruption": disruption or {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "10m"}}}


CASES = {
    # rule name: [(type, props, stack, expected violations)]
    "gpu-pools-tainted-and-bounded": [
        (rules.KARPENTER_NODE_POOL, gpu_node_pool(), "dev", 0),
        (rules.KARPENTER_NODE_POOL, gpu_node_pool(taints=()), "dev", 1),
        (rules.KARPENTER_NODE_POOL, gpu_node_pool(limits={}), "dev", 1),
        (rules.EKS_NODE_GROUP, {"instanceTypes": ["g5.xlarge"], "taints": [GPU_TAINT_CLOUD],
                                "scalingConfig": {"minSize": 0, "maxSize": 4}}, "dev", 0),
        (rules.EKS_NODE_GROUP, {"amiType": "AL2023_x86_64_NVIDIA", "taints": [],
                                "scalingConfig": {"minSize": 5, "maxSize": 4}}, "dev", 2),
        (rules.EKS_NODE_GROUP, {"instanceTypes": ["m7i.large"], "taints": []}, "dev", 0),
        (rules.GKE_NODE_POOL, {"nodeConfig": {"guestAccelerators": [{"type": "nvidia-l4", "count": 1}],
                                              "taints": [GPU_TAINT_CLOUD]},
                               "autoscaling": {"minNodeCount": 0, "maxNodeCount": 3}}, "dev", 0),
        (rules.GKE_NODE_POOL, {"nodeConfig": {"guestAccelerators": [{"type": "nvidia-l4", "count": 1}]}}, "dev", 2),
    ],
    "gpu-pools-scale-to-zero": [
        (rules.KARPENTER_NODE_POOL, gpu_node_pool(), "dev", 0),
        (rules.KARPENTER_NODE_POOL, gpu_node_pool(disruption={"consolidateAfter": "Never"}), "dev", 1),
        (rules.EKS_NODE_GROUP, {"instanceTypes": ["p5.48xlarge"], "scalingConfig": {"minSize": 1}}, "dev", 1),
        (rules.GKE_NODE_POOL, {"nodeConfig": {"guestAccelerators": [{"count": 1}]},
                               "autoscaling": {"totalMinNodeCount": 0, "totalMaxNodeCount": 2}}, "dev", 0),
    ],
    "only-gpu-agents-tolerate-gpu-taint": [
        (DEPLOYMENT, deployment(tolerations=[{"operator": "Exists"}]), "dev", 1),
        (DEPLOYMENT, deployment(tolerations=[{"key": "CriticalAddonsOnly", "operator": "Exists"}]), "dev", 0),
        (RELEASE, {"chart": "nvidia-device-plugin", "values": {"tolerations": [GPU_TAINT_K8S]}}, "dev", 0),
        (RELEASE, {"chart": "kube-prometheus-stack", "values": {"grafana": {"tolerations": [GPU_TAINT_K8S]}}},
         "dev", 1),
        # GKE's GPU network agents of a multi-node pool (clouds/gke/fabric.py), in kube-system only.
        ("kubernetes:apps/v1:DaemonSet", {"kind": "DaemonSet", "metadata": {"name": "nccl-tcpxo-installer-h100",
                                                                              "namespace": "kube-system"},
                                          "spec": {"template": {"spec": {"tolerations": [GPU_TAINT_K8S]}}}}, "dev", 0),
        ("kubernetes:apps/v1:DaemonSet", {"kind": "DaemonSet", "metadata": {"name": "nccl-tcpxo-installer-h100",
                                                                              "namespace": "research"},
                                          "spec": {"template": {"spec": {"tolerations": [GPU_TAINT_K8S]}}}}, "dev", 1),
        ("kubernetes:apps/v1:DaemonSet", {"kind": "DaemonSet", "metadata": {"name": "miner", "namespace": "kube-system"},
                                          "spec": {"template": {"spec": {"tolerations": [GPU_TAINT_K8S]}}}}, "dev", 1),
    ],
    "images-and-charts-pinned": [
        (DEPLOYMENT, deployment(), "dev", 0),
        (DEPLOYMENT, {**deployment(), "spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "python"}, {"name": "b", "image": "python:latest"},
            {"name": "c", "image": "registry:5000/python"}, {"name": "d", "image": "python@sha256:" + "a" * 64}]}}}},
         "dev", 3),
        (RELEASE, {"chart": "dcgm-exporter", "version": "4.8.2"}, "dev", 0),
        (RELEASE, {"chart": "dcgm-exporter"}, "dev", 1),
        (RELEASE, {"chart": "x", "version": ">=1.0"}, "dev", 1),
        (RELEASE, {"chart": "x", "version": "1.0.0", "values": {"image": {"tag": "latest"}}}, "dev", 1),
    ],
    "no-host-access-outside-platform-agents": [
        (DEPLOYMENT, deployment(), "dev", 0),
        (DEPLOYMENT, deployment(hostNetwork=True, volumes=[{"name": "h", "hostPath": {"path": "/"}}]), "dev", 2),
        (DEPLOYMENT, {**deployment(hostPID=True), "metadata": {"name": "x", "namespace": "monitoring"}}, "dev", 0),
        (DEPLOYMENT, {**deployment(), "spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "a:1", "securityContext": {"privileged": True}}]}}}}, "dev", 1),
    ],
    "no-plaintext-secrets": [
        (RELEASE, {"chart": "x", "values": {"grafana": {"adminPassword": "hunter2"}}}, "dev", 1),
        (RELEASE, {"chart": "x", "values": {"grafana": {"admin": {"existingSecret": "grafana-admin",
                                                                  "passwordKey": "admin-password"}}}}, "dev", 0),
        (DEPLOYMENT, deployment(), "dev", 0),
        (DEPLOYMENT, {**deployment(), "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "a:1",
            "env": [{"name": "HF_TOKEN", "value": "hf_abc"}, {"name": "DB_PASSWORD", "valueFrom": {}},
                    {"name": "TOKENIZERS_PARALLELISM", "value": "false"}]}]}}}}, "dev", 1),
        ("kubernetes:core/v1:ConfigMap", {"kind": "ConfigMap", "data": {"api_key": "abc", "apiUrl": "x"}}, "dev", 1),
    ],
    "kubernetes-version-supported": [
        (rules.EKS_CLUSTER, {"version": KUBERNETES_VERSION}, "dev", 0),
        (rules.EKS_CLUSTER, {"version": "1.29"}, "dev", 1),
        (rules.GKE_CLUSTER, {"minMasterVersion": "1.40.1-gke.100"}, "dev", 1),
    ],
    "eks-control-plane-hardened": [
        (rules.EKS_CLUSTER, {"encryptionConfig": {"resources": ["secrets"], "provider": {"keyArn": "arn"}},
                             "enabledClusterLogTypes": ["api", "audit", "authenticator"],
                             "vpcConfig": {"endpointPublicAccess": True, "publicAccessCidrs": ["203.0.113.0/24"]}},
         "prod", 0),
        (rules.EKS_CLUSTER, {"enabledClusterLogTypes": ["api"],
                             "vpcConfig": {"endpointPublicAccess": True, "publicAccessCidrs": ["0.0.0.0/0"]}},
         "prod", 3),
        (rules.EKS_CLUSTER, {"encryptionConfig": {"resources": ["secrets"]},
                             "enabledClusterLogTypes": ["api", "audit", "authenticator"],
                             "vpcConfig": {"endpointPublicAccess": True, "publicAccessCidrs": ["0.0.0.0/0"]}},
         "dev", 0),
        # The world written as two halves is still the world.
        (rules.EKS_CLUSTER, {"encryptionConfig": {"resources": ["secrets"]},
                             "enabledClusterLogTypes": ["api", "audit", "authenticator"],
                             "vpcConfig": {"endpointPublicAccess": True,
                                           "publicAccessCidrs": ["0.0.0.0/1", "128.0.0.0/1"]}},
         "prod", 1),
    ],
    "gke-cluster-hardened": [
        (rules.GKE_CLUSTER, {"workloadIdentityConfig": {"workloadPool": "p.svc.id.goog"},
                             "enableShieldedNodes": True, "privateClusterConfig": {"enablePrivateNodes": True},
                             "databaseEncryption": {"state": "ENCRYPTED", "keyName": "k"},
                             "masterAuthorizedNetworksConfig": {"cidrBlocks": [{"cidrBlock": "203.0.113.0/24"}]}},
         "gcp-prod", 0),
        # One rule for both clouds: a prod GKE endpoint open to the world breaks it as an EKS one does.
        (rules.GKE_CLUSTER, {"workloadIdentityConfig": {"workloadPool": "p.svc.id.goog"},
                             "enableShieldedNodes": True, "privateClusterConfig": {"enablePrivateNodes": True},
                             "databaseEncryption": {"state": "ENCRYPTED", "keyName": "k"},
                             "masterAuthorizedNetworksConfig": {"cidrBlocks": [{"cidrBlock": "0.0.0.0/1"},
                                                                               {"cidrBlock": "128.0.0.0/1"}]}},
         "gcp-prod", 1),
        (rules.GKE_CLUSTER, {"enableShieldedNodes": False}, "gcp-prod", 5),
        (rules.GKE_CLUSTER, {"workloadIdentityConfig": {"workloadPool": "p.svc.id.goog"},
                             "databaseEncryption": {"state": "ENCRYPTED", "keyName": "k"}}, "gcp-dev", 0),
        (rules.GKE_CLUSTER, {"workloadIdentityConfig": {"workloadPool": "p.svc.id.goog"},
                             "databaseEncryption": {"state": "DECRYPTED"}}, "gcp-dev", 1),
    ],
}
RULES = {rule.name: rule for rule in rules.RESOURCE_RULES}


@pytest.mark.parametrize("name, resource_type, props, stack, expected",
                         [(name, *case) for name, cases in CASES.items() for case in cases],
                         ids=[f"{name}-{i}" for name, cases in CASES.items() for i in range(len(cases))])
def test_rule(name, resource_type, props, stack, expected):
    violations = RULES[name].check(resource_type, props, stack)
    assert len(violations) == expected, violations


def test_every_resource_rule_is_tested():
    assert set(CASES) == set(RULES)


def test_every_rule_says_how_to_fix_it():
    for rule in (*rules.RESOURCE_RULES, *rules.STACK_RULES):
        assert rule.description and rule.enforcement in (rules.MANDATORY, rules.ADVISORY)


def test_the_policies_agree_with_the_platform():
    # The pack is standalone (it imports nothing of the project), so its copies of shared names are pinned here,
    # against core's vocabulary.
    assert rules.NODE_AGENT_NAMESPACES == {KUBE_SYSTEM_NAMESPACE, DEVICE_PLUGIN_NAMESPACE, FAKE_GPU_NAMESPACE}
    assert rules.DEFAULT_MONITORING_NAMESPACE == DEFAULT_MONITORING_NAMESPACE
    assert rules.TEAM_LABEL == TEAM_LABEL and rules.GPU_RESOURCE == GPU_RESOURCE
    assert (rules.GPU_TAINT_KEY, rules.GPU_TAINT_VALUE) == (GPU_TAINT.key, GPU_TAINT.value)
    assert rules.HELM_RELEASE == HELM_RELEASE
    assert {c.name for c in (NVIDIA_DEVICE_PLUGIN, DCGM_EXPORTER, FAKE_GPU_OPERATOR, EFA_DEVICE_PLUGIN)} == \
        rules.GPU_AGENT_CHARTS
    assert rules.SUPPORTED_KUBERNETES == SUPPORTED_KUBERNETES
    low, high = (tuple(map(int, v.split("."))) for v in SUPPORTED_KUBERNETES)
    assert low <= tuple(map(int, KUBERNETES_VERSION.split("."))) <= high


# ---- the stack rule ---------------------------------------------------------------------------------------

def _team_objects(synthesis_resources, drop_kind: str | None = None) -> list[rules.Resource]:
    return [rules.Resource(r.type, r.urn, r.inputs) for r in synthesis_resources
            if r.custom and r.inputs.get("kind") != drop_kind]


@pytest.mark.parametrize("drop, message", [
    ("ResourceQuota", "team namespace a has no ResourceQuota on GPUs, CPU, memory"),
    ("LimitRange", "team namespace a has no LimitRange with container defaults"),
    ("NetworkPolicy", "team namespace a has no default-deny ingress NetworkPolicy"),
])
def test_team_namespaces_need_quota_limits_and_default_deny(drop, message):
    resources = synth_with(cluster=KIND, teams=[team("a")]).resources
    assert rules.team_namespaces_have_guardrails(_team_objects(resources)) == []
    ((urn, found),) = rules.team_namespaces_have_guardrails(_team_objects(resources, drop_kind=drop))
    assert found == message and urn.endswith("::team-a-namespace")


# ---- as CrossGuard runs them: through the SDK's unknown-checking proxy -------------------------------------

OPTIONS = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])
POLICIES = {policy.name: policy for policy in pack.policies()}


def run_policy(name: str, resource_type: str, props: dict, stack: str = "dev") -> list[str]:
    reported: list[str] = []
    args = ResourceValidationArgs(resource_type, unknown_checking_proxy(props), f"urn:pulumi:{stack}::mlplatform::"
                                  f"{resource_type}::x", "x", OPTIONS, None)
    POLICIES[name].validate(args, lambda message, urn=None: reported.append(message))
    return reported


def test_every_rule_is_in_the_pack_with_its_enforcement():
    assert set(POLICIES) == {r.name for r in (*rules.RESOURCE_RULES, *rules.STACK_RULES)}
    assert POLICIES["gpu-pools-scale-to-zero"].enforcement_level.value == "advisory"
    assert POLICIES["eks-control-plane-hardened"].enforcement_level.value == "mandatory"


def test_unknown_values_are_not_violations_and_do_not_stop_the_rest_of_the_check():
    props = {"encryptionConfig": UNKNOWN_OBJECT_VALUE, "enabledClusterLogTypes": ["api"],
             "vpcConfig": {"endpointPublicAccess": UNKNOWN_BOOLEAN_VALUE, "publicAccessCidrs": ["0.0.0.0/0"]}}
    with pytest.raises(UnknownValueError):
        unknown_checking_proxy(props)["encryptionConfig"]  # what a rule reading the proxy would hit
    reported = run_policy("eks-control-plane-hardened", rules.EKS_CLUSTER, props, stack="prod")
    assert len(reported) == 1 and "logging" in reported[0]


def test_unknown_image_and_namespace_are_skipped():
    props = {"kind": "Deployment", "metadata": {"namespace": UNKNOWN_STRING_VALUE},
             "spec": {"template": {"spec": {"hostNetwork": True,
                                            "containers": [{"name": "a", "image": UNKNOWN_STRING_VALUE}]}}}}
    assert run_policy("images-and-charts-pinned", DEPLOYMENT, props) == []
    assert run_policy("no-host-access-outside-platform-agents", DEPLOYMENT, props) == []


def test_violations_are_reported_through_the_pack():
    reported = run_policy("gpu-pools-tainted-and-bounded", rules.KARPENTER_NODE_POOL, gpu_node_pool(taints=()))
    assert len(reported) == 1 and "taint" in reported[0]


def test_stack_policy_through_the_pack():
    resources = synth_with(cluster=KIND, teams=[team("a")]).resources
    policy_resources = [PolicyResource(r.type, unknown_checking_proxy(r.inputs), r.urn, r.name, OPTIONS, None, None,
                                       [], {}) for r in resources if r.custom and r.inputs.get("kind") != "LimitRange"]
    reported: list[tuple[str, str | None]] = []
    POLICIES["team-namespaces-have-guardrails"].validate(StackValidationArgs(policy_resources),
                                                          lambda message, urn=None: reported.append((message, urn)))
    assert reported == [("team namespace a has no LimitRange with container defaults",
                         next(r.urn for r in resources if r.name == "team-a-namespace"))]


def test_the_pack_loads_from_its_own_directory_as_the_cli_runs_it():
    code = "import pack; print(len(pack.policies()))"
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR / "policies", capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == str(len(POLICIES))


# ---- in the synth ----------------------------------------------------------------------------------------------

def test_policy_config_changes_a_rules_enforcement(tmp_path):
    synthesis = synth_with(cluster=KIND, teams=[team("a")])
    synthesis.resources = [r for r in synthesis.resources if r.inputs.get("kind") != "LimitRange"]
    (violation,) = check(synthesis)
    assert violation.rule.name == "team-namespaces-have-guardrails" and violation.mandatory

    config = tmp_path / "policy.json"
    config.write_text(json.dumps({"team-namespaces-have-guardrails": {"enforcementLevel": "advisory"}}))
    (violation,) = check(synthesis, enforcement_levels(config))
    assert not violation.mandatory
    config.write_text(json.dumps({"all": "disabled"}))
    assert check(synthesis, enforcement_levels(config)) == []


def test_policy_config_naming_no_rule_is_an_error(tmp_path):
    config = tmp_path / "policy.json"
    config.write_text(json.dumps({"no-such-rule": "mandatory"}))
    with pytest.raises(ConfigError, match="no-such-rule: expected one of the rules"):
        enforcement_levels(config)


def test_make_synth_fails_on_a_mandatory_violation_and_names_the_rule(monkeypatch, tmp_path, capsys):
    import synth.__main__ as cli
    broken = synth_with(cluster=KIND, teams=[team("a")])
    broken.resources = [r for r in broken.resources if r.inputs.get("kind") != "NetworkPolicy"]
    monkeypatch.setattr(cli.pipeline, "synthesize", lambda stack, **options: broken)
    assert cli.main(["test", "--out", str(tmp_path / "out")]) == 1
    output = capsys.readouterr().out
    assert "[mandatory] team-namespaces-have-guardrails:" in output
    assert "team namespace a has no default-deny ingress NetworkPolicy" in output
