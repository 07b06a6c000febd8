"""GPU enablement: the right device plugin per cloud, only on GPU nodes, with the sharing each pool asks for."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s
import pytest
import yaml

from components.gpu import GpuEnablement
from core.handle import GpuPool, gpu_pool_labels
from core.vocabulary import GPU_TAINT
from config.errors import ConfigError
from core.fields import GpuSharing
from policies.rules import only_gpu_agents_tolerate_the_gpu_taint
from synth.engine import Resource, Synthesis
from tests.chart_values import chart_values, unknown_keys
from tests.conftest import KIND, cluster_handle, run_component, synth_with, team

RELEASE = "kubernetes:helm.sh/v3:Release"


def pool(name: str, accelerator: str = "nvidia-a100-80gb", sharing: dict | None = None, **extra) -> GpuPool:
    return GpuPool(name=name, accelerator=accelerator, gpus_per_node=extra.pop("gpus_per_node", 8), min_nodes=0,
                   max_nodes=2, spot=False, labels=gpu_pool_labels(name, accelerator), taints=(GPU_TAINT,),
                   sharing=GpuSharing.model_validate(sharing or {}), **extra)


def enable(pools: tuple[GpuPool, ...], **capabilities: bool) -> Synthesis:
    return run_component(lambda: GpuEnablement("gpu", cluster_handle(pools, **capabilities)))


def only_release(synthesis: Synthesis) -> Resource:
    (release,) = synthesis.releases()
    return release


def fake_gpu_operator(synthesis: Synthesis) -> Resource:
    (release,) = [r for r in synthesis.releases() if r.inputs["chart"].endswith("/fake-gpu-operator")]
    return release


POOLS = (
    pool("a100", sharing={"migStrategy": "single"}),
    pool("l4", accelerator="nvidia-l4", gpus_per_node=1,
         sharing={"timeSlicing": {"replicas": 4, "renameByDefault": True, "failRequestsGreaterThanOne": False}}),
    pool("t4", accelerator="nvidia-tesla-t4", gpus_per_node=1),
)


# ---- per cloud ------------------------------------------------------------------------------------------

def test_nodes_with_drivers_and_no_plugin_get_nvidias_pinned_device_plugin():
    release = only_release(enable(POOLS))
    assert release.inputs["chart"] == "nvidia-device-plugin"
    assert release.inputs["version"] == "0.20.0"
    assert release.inputs["repositoryOpts"] == {"repo": "https://nvidia.github.io/k8s-device-plugin"}
    assert release.inputs["namespace"] == "nvidia-device-plugin"
    assert release.inputs["values"]["priorityClassName"] == "system-node-critical"


def test_a_cloud_that_runs_its_own_device_plugin_gets_none():
    """GKE installs drivers and its own device plugin: a second plugin would advertise every GPU twice."""
    synthesis = enable(POOLS, device_plugin=True)
    assert synthesis.releases() == []
    assert len(synthesis.of_type("kubernetes:scheduling.k8s.io/v1:PriorityClass")) == 3


def test_no_gpu_pools_no_device_plugin():
    assert enable(()).releases() == []


def test_kind_gets_the_fake_gpu_operator_instead():
    synthesis = synth_with(cluster={"cloud": "kind", "gpuPools": [
        {"name": "t4", "gpusPerNode": 2, "nodes": 2, "sharing": {"timeSlicing": {"replicas": 3}}},
        {"name": "h100", "accelerator": "nvidia-h100-80gb"}]})
    release = fake_gpu_operator(synthesis)
    assert release.inputs["chart"] == "oci://ghcr.io/run-ai/fake-gpu-operator/fake-gpu-operator"
    assert release.inputs["version"] == "0.2.0"
    assert release.inputs["namespace"] == "gpu-operator"
    assert release.inputs["values"]["topology"] == {
        "nodePoolLabelKey": "mlplatform.io/pool",
        "migStrategy": "none",
        "nodePools": {
            # Time-slicing shows as more nvidia.com/gpu per node, as the real plugin advertises it.
            "t4": {"gpuProduct": "Tesla-T4", "gpuCount": 6, "gpuMemory": 16384},
            "h100": {"gpuProduct": "NVIDIA-H100-80GB-HBM3", "gpuCount": 1, "gpuMemory": 81920},
        },
    }
    assert synthesis.outputs["gpuCapacity"] == 2 * 2 * 3 + 1


def test_agent_namespaces_allow_privileged_pods_and_the_release_waits_for_them():
    synthesis = enable(POOLS)
    (namespace,) = synthesis.of_type("kubernetes:core/v1:Namespace")
    assert namespace.inputs["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert namespace.urn in only_release(synthesis).depends_on


# ---- only on GPU nodes ------------------------------------------------------------------------------------

def test_plugin_tolerates_exactly_the_pool_taints_and_runs_on_gpu_pool_nodes_only():
    values = only_release(enable(POOLS)).inputs["values"]
    assert values["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present",
                                      "effect": "NoSchedule"}]
    terms = values["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert len(terms) == len(POOLS)
    for term, gpu_pool in zip(terms, POOLS):
        assert {e["key"]: e["values"] for e in term["matchExpressions"]} == {
            key: [value] for key, value in gpu_pool.labels.items()}
        assert all(e["operator"] == "In" for e in term["matchExpressions"])


# ---- sharing ----------------------------------------------------------------------------------------------

def test_each_pool_gets_its_own_device_plugin_config():
    config = only_release(enable(POOLS)).inputs["values"]["config"]
    configs = {name: yaml.safe_load(text) for name, text in config["map"].items()}
    assert config["default"] == "unshared"
    assert configs["unshared"] == {"version": "v1", "flags": {"migStrategy": "none"}}
    assert configs["a100"] == {"version": "v1", "flags": {"migStrategy": "single"}}
    assert configs["l4"] == {"version": "v1", "flags": {"migStrategy": "none"}, "sharing": {"timeSlicing": {
        "renameByDefault": True, "failRequestsGreaterThanOne": False,
        "resources": [{"name": "nvidia.com/gpu", "replicas": 4}]}}}
    assert configs["t4"] == configs["unshared"]
    # Nodes find their config by the label their pool puts on them.
    assert {p.labels["nvidia.com/device-plugin.config"] for p in POOLS} == {"a100", "l4", "t4"}


def test_renamed_shares_do_not_count_against_gpu_quotas_but_plain_shares_do():
    renamed = pool("l4", sharing={"timeSlicing": {"replicas": 4, "renameByDefault": True}})
    plain = pool("l4", sharing={"timeSlicing": {"replicas": 4}})
    assert (renamed.schedulable_gpus, plain.schedulable_gpus) == (16, 64)


# ---- chart values against the charts' own values.yaml ----------------------------------------------------

def test_gpus_go_by_environment_variable_unless_the_cloud_set_its_nodes_for_mounts():
    # The plugin's default, envvar, needs nothing of the node; volume-mounts without the nodes' toolkit set to
    # read the mounts would start GPU containers with no GPU.
    assert "deviceListStrategy" not in only_release(enable(POOLS)).inputs["values"]


def test_device_plugin_values_exist_in_the_chart(upstream):
    ours = only_release(enable(POOLS)).inputs["values"]
    theirs = chart_values(upstream, "nvidia-device-plugin")
    assert unknown_keys(ours, theirs, free_form={"config.map", "resources"}) == []


def test_fake_gpu_operator_values_exist_in_the_chart(upstream):
    ours = fake_gpu_operator(synth_with(cluster=KIND)).inputs["values"]
    theirs = chart_values(upstream, "fake-gpu-operator")
    # templates/mig-faker/daemonset.yml reads migFaker.resources, which values.yaml leaves out.
    assert unknown_keys(ours, theirs, free_form={"topology.nodePools", "migFaker"}) == []


def test_unknown_keys_catches_a_misspelt_key():
    assert unknown_keys({"config": {"mapp": {}}, "tolerations": []}, {"config": {"map": {}}, "tolerations": []},
                        free_form=set()) == ["config.mapp"]


# ---- ML priority classes ---------------------------------------------------------------------------------

def test_ml_priority_classes_put_serving_above_training_above_best_effort():
    classes = {r.inputs["metadata"]["name"]: r.inputs
               for r in enable(()).of_type("kubernetes:scheduling.k8s.io/v1:PriorityClass")}
    values = [classes[name]["value"] for name in ("ml-serving", "ml-training", "ml-training-preemptible")]
    assert values == sorted(values, reverse=True)
    assert classes["ml-training-preemptible"]["preemptionPolicy"] == "Never"
    assert not any(c["globalDefault"] for c in classes.values())


# ---- the GPU-taint rule ------------------------------------------------------------------------------------

TOLERATE_GPU = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


@pytest.mark.parametrize("resource_type, props, violations", [
    (RELEASE, {"chart": "kube-prometheus-stack", "values": {"prometheus": {"prometheusSpec": {
        "tolerations": [TOLERATE_GPU]}}}}, ["values.prometheus.prometheusSpec.tolerations[0]"]),
    (RELEASE, {"chart": "nvidia-device-plugin", "values": {"tolerations": [TOLERATE_GPU]}}, []),
    (RELEASE, {"chart": "oci://ghcr.io/run-ai/fake-gpu-operator/fake-gpu-operator",
               "values": {"tolerations": [TOLERATE_GPU]}}, []),
    ("kubernetes:apps/v1:Deployment", {"spec": {"template": {"spec": {"tolerations": [{"operator": "Exists"}]}}}},
     ["spec.template.spec.tolerations[0]"]),
    ("kubernetes:apps/v1:Deployment", {"spec": {"template": {"spec": {"tolerations": [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present"},
        {"key": "CriticalAddonsOnly", "operator": "Exists"},
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"}]}}}},
     ["spec.template.spec.tolerations[0]"]),
])
def test_only_gpu_agents_may_tolerate_the_gpu_taint(resource_type, props, violations):
    found = only_gpu_agents_tolerate_the_gpu_taint(resource_type, props)
    assert [message.split(" tolerates ")[0] for message in found] == violations


# ---- bad input ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gpu_pool, message", [
    ({"name": "t4", "sharing": {"timeSlicing": {"replicas": 1}}},
     "mlplatform:cluster.gpuPools[0].sharing.timeSlicing.replicas: Input should be greater than or equal to 2"),
    ({"name": "t4", "sharing": {"migStrategy": "single"}},
     "mlplatform:cluster.gpuPools[0]: sharing.migStrategy 'single' needs a MIG-capable GPU, and nvidia-tesla-t4 "
     "has no MIG"),
    ({"name": "a100", "accelerator": "nvidia-a100-80gb",
      "sharing": {"migStrategy": "mixed", "timeSlicing": {"replicas": 2}}},
     "mlplatform:cluster.gpuPools[0].sharing: both timeSlicing and migStrategy 'mixed' are set"),
    ({"name": "a100", "accelerator": "nvidia-a100-80gb", "sharing": {"migStrategy": "many"}},
     "mlplatform:cluster.gpuPools[0].sharing.migStrategy: Input should be 'none', 'single' or 'mixed'"),
])
def test_bad_sharing_is_a_config_error(gpu_pool, message):
    with pytest.raises(ConfigError) as caught:
        synth_with(cluster={"cloud": "kind", "gpuPools": [gpu_pool]})
    assert f"Pulumi.test.yaml: {message}" in str(caught.value)


def test_kind_cannot_imitate_two_mig_strategies():
    pools = [{"name": "a", "accelerator": "nvidia-a100-80gb", "sharing": {"migStrategy": "single"}},
             {"name": "b", "accelerator": "nvidia-a100-80gb", "sharing": {"migStrategy": "mixed"}}]
    with pytest.raises(ConfigError, match=r"mlplatform:cluster\.gpuPools: the pools ask for different MIG "
                                          r"strategies \(mixed, single\)"):
        synth_with(cluster={"cloud": "kind", "gpuPools": pools})


def test_sharing_on_a_cluster_whose_device_plugin_is_not_ours(tmp_path):
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    pools = [{"name": "l4", "accelerator": "nvidia-l4", "gpusPerNode": 1, "maxNodes": 2,
              "sharing": {"timeSlicing": {"replicas": 2}}}]
    with pytest.raises(ConfigError, match=r"mlplatform:cluster\.gpuPools: \[0\]\.sharing: this cluster runs its own "
                                          r"device plugin"):
        synth_with(cluster={"cloud": "existing", "name": "lab", "kubeconfig": str(kubeconfig),
                            "devicePluginInstalled": True, "gpuPools": pools}, teams=[team("a")])


def test_the_synth_check_catches_a_workload_that_tolerates_the_gpu_taint():
    from synth.checks import check

    def program() -> None:
        provider = k8s.Provider("cluster-k8s", kubeconfig="apiVersion: v1\nkind: Config\n")
        k8s.apps.v1.Deployment("sneaky", spec={
            "selector": {"matchLabels": {"app": "x"}},
            "template": {"metadata": {"labels": {"app": "x"}},
                         "spec": {"containers": [{"name": "x", "image": "busybox:1.37"}],
                                  "tolerations": [TOLERATE_GPU]}}},
            opts=pulumi.ResourceOptions(provider=provider))

    (violation,) = check(run_component(program))
    assert violation.rule.name == "only-gpu-agents-tolerate-gpu-taint"
    assert violation.urn.endswith("::sneaky")
