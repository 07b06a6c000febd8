"""A team namespace: quota, defaults, access and isolation, all through the cluster's explicit provider."""

from __future__ import annotations

from dataclasses import replace

import pulumi_kubernetes as k8s

from components.team import TeamNamespace
from config.models import Team
from core.fields import GpuSharing
from core.handle import nccl_settings, platform_gpu_pool
from synth.engine import Synthesis
from tests.conftest import run_component

TEAM = Team.model_validate({
    "name": "vision",
    "quota": {"requests": {"cpu": "16", "memory": "64Gi"}, "limits": {"cpu": "32", "memory": "64Gi"},
              "gpus": 4, "pods": 40, "persistentVolumeClaims": 5, "storage": "2Ti"},
    "containerDefaults": {"requests": {"cpu": "200m", "memory": "512Mi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
    "groups": {"edit": ["vision-devs", "vision-leads"], "view": ["auditors"]},
    "podSecurity": "restricted",
    "ingressControllerNamespace": "ingress-nginx",
})


def _synth(team: Team = TEAM, nccl: dict[str, dict[str, str]] | None = None) -> Synthesis:
    def program() -> None:
        provider = k8s.Provider("cluster-k8s", kubeconfig="apiVersion: v1\nkind: Config\n")
        TeamNamespace("team-vision", team, provider, monitoring_namespace="observability", nccl=nccl)
    return run_component(program)


def _manifest(synthesis: Synthesis, kind: str, name: str) -> dict:
    return next(r.inputs for r in synthesis.resources
                if r.inputs.get("kind") == kind and r.inputs["metadata"]["name"] == name)


def test_every_child_is_parented_named_after_the_component_and_uses_the_given_provider():
    synthesis = _synth()
    (component,) = synthesis.of_type("mlplatform:team:TeamNamespace")
    (provider,) = synthesis.of_type("pulumi:providers:kubernetes")
    children = synthesis.children_of(component.urn)
    # namespace, quota, limits, 2 role bindings, 4 network policies, 2 local queues
    assert len(children) == 11
    for child in children:
        assert child.name.startswith("team-vision-")
        assert child.provider == provider.urn
    namespace = next(c for c in children if c.type == "kubernetes:core/v1:Namespace")
    assert all(namespace.urn in c.depends_on for c in children if c is not namespace)


def test_namespace_enforces_pod_security_pinned_to_the_cluster_version():
    labels = _manifest(_synth(), "Namespace", "vision")["metadata"]["labels"]
    assert labels["mlplatform.io/team"] == "vision"
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["pod-security.kubernetes.io/enforce-version"] == "v1.34"
    assert labels["pod-security.kubernetes.io/warn"] == labels["pod-security.kubernetes.io/audit"] == "restricted"


def test_quota_caps_cpu_memory_gpus_pods_and_storage():
    quota = _manifest(_synth(), "ResourceQuota", "team-quota")
    assert quota["metadata"]["namespace"] == "vision"
    assert quota["spec"]["hard"] == {
        "requests.cpu": "16", "requests.memory": "64Gi", "limits.cpu": "32", "limits.memory": "64Gi",
        "requests.nvidia.com/gpu": "4", "requests.nvidia.com/gpu.shared": "4", "pods": "40",
        "persistentvolumeclaims": "5", "requests.storage": "2Ti",
    }


def test_limits_default_to_requests_when_not_given():
    team = TEAM.model_copy(update={"quota": TEAM.quota.model_copy(update={"limits": None})})
    hard = _manifest(_synth(team), "ResourceQuota", "team-quota")["spec"]["hard"]
    assert (hard["limits.cpu"], hard["limits.memory"]) == ("16", "64Gi")


def test_limit_range_gives_containers_default_requests_and_limits():
    (item,) = _manifest(_synth(), "LimitRange", "container-defaults")["spec"]["limits"]
    assert item == {"type": "Container", "defaultRequest": {"cpu": "200m", "memory": "512Mi"},
                    "default": {"cpu": "2", "memory": "4Gi"}}


def test_groups_are_bound_to_the_builtin_roles():
    synthesis = _synth()
    edit = _manifest(synthesis, "RoleBinding", "team-edit")
    assert edit["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"}
    assert [s["name"] for s in edit["subjects"]] == ["vision-devs", "vision-leads"]
    assert {s["kind"] for s in edit["subjects"]} == {"Group"}
    assert _manifest(synthesis, "RoleBinding", "team-view")["subjects"][0]["name"] == "auditors"


def test_no_role_binding_without_groups():
    team = TEAM.model_copy(update={"groups": TEAM.groups.model_copy(update={"edit": [], "view": []})})
    assert _synth(team).of_type("kubernetes:rbac.authorization.k8s.io/v1:RoleBinding") == []


def test_ingress_is_denied_except_from_the_namespace_itself_monitoring_and_the_ingress_controller():
    synthesis = _synth()
    deny = _manifest(synthesis, "NetworkPolicy", "default-deny-ingress")["spec"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"] and deny["ingress"] == []
    same = _manifest(synthesis, "NetworkPolicy", "allow-same-namespace")["spec"]
    assert same["ingress"] == [{"from": [{"podSelector": {}}]}]
    monitoring = _manifest(synthesis, "NetworkPolicy", "allow-from-monitoring")["spec"]
    # Prometheus's pods only: the rest of the monitoring namespace (Grafana, Alertmanager, exporters) stays out.
    assert monitoring["ingress"] == [{"from": [{"namespaceSelector": {
        "matchLabels": {"kubernetes.io/metadata.name": "observability"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]}]
    controller = _manifest(synthesis, "NetworkPolicy", "allow-from-ingress-controller")["spec"]
    assert controller["ingress"] == [{"from": [{"namespaceSelector": {
        "matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]}]


def test_no_ingress_from_the_ingress_controller_unless_the_team_asks():
    team = TEAM.model_copy(update={"ingress_controller_namespace": None})
    policies = {r.inputs["metadata"]["name"] for r in _synth(team).of_type(
        "kubernetes:networking.k8s.io/v1:NetworkPolicy")}
    assert policies == {"default-deny-ingress", "allow-same-namespace", "allow-from-monitoring"}


def test_jobs_without_a_queue_name_land_in_the_teams_queue():
    queues = {r.inputs["metadata"]["name"]: r.inputs["spec"] for r in _synth().resources
              if r.inputs.get("kind") == "LocalQueue"}
    assert queues == {"vision": {"clusterQueue": "vision"}, "default": {"clusterQueue": "vision"}}


def test_each_pool_with_a_fabric_gives_the_namespace_its_nccl_settings_as_a_config_map():
    plain = platform_gpu_pool("a10g", "nvidia-a10g", gpus_per_node=1, min_nodes=0, max_nodes=2, spot=False,
                              sharing=GpuSharing())
    efa = replace(platform_gpu_pool("h100", "nvidia-h100-80gb", gpus_per_node=8, min_nodes=0, max_nodes=4,
                                    spot=False, sharing=GpuSharing(), multi_node=True),
                  fabric_devices={"vpc.amazonaws.com/efa": 32}, fabric_env={"FI_PROVIDER": "efa"})
    synthesis = _synth(nccl=nccl_settings([plain.describe(), efa.describe()]))
    maps = [r for r in synthesis.resources if r.inputs.get("kind") == "ConfigMap"]
    assert [m.inputs["metadata"]["name"] for m in maps] == ["nccl-h100"]
    (config_map,) = maps
    assert config_map.inputs["metadata"]["namespace"] == "vision"
    assert config_map.inputs["data"] == {"FI_PROVIDER": "efa"}
    # Like every other child: the component's, through the cluster's provider, after the namespace.
    (component,) = synthesis.of_type("mlplatform:team:TeamNamespace")
    (provider,) = synthesis.of_type("pulumi:providers:kubernetes")
    assert config_map in synthesis.children_of(component.urn) and config_map.name == "team-vision-nccl-h100"
    assert config_map.provider == provider.urn
    assert efa.describe()["ncclConfigMap"] == "nccl-h100" and plain.describe()["ncclConfigMap"] is None
