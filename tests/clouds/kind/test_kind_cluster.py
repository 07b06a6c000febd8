"""The kind cluster: the same shape as the clouds' clusters, created and deleted by the kind CLI."""

from __future__ import annotations

import yaml

from clouds.kind.cluster import KindCluster
from core.handle import ClusterHandle
from versions import KIND_NODE_IMAGE
from clouds.kind.config import KindClusterConfig
from synth.engine import NOT_PLAIN
from tests.conftest import run_component

SPEC = KindClusterConfig.model_validate({
    "cloud": "kind", "name": "lab", "systemNodes": 2,
    "gpuPools": [{"name": "a100", "accelerator": "nvidia-a100-80gb", "nodes": 2, "gpusPerNode": 4},
                 {"name": "t4", "nodes": 1}],
})
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


def _synth() -> tuple[ClusterHandle, object]:
    handles: list[ClusterHandle] = []
    synthesis = run_component(lambda: handles.append(KindCluster("lab", SPEC).handle))
    return handles[0], synthesis


def test_kind_config_has_a_system_pool_and_tainted_labelled_gpu_workers():
    _, synthesis = _synth()
    (command,) = synthesis.of_type("command:local:Command")
    nodes = yaml.safe_load(command.inputs["stdin"])["nodes"]

    assert [node["role"] for node in nodes] == ["control-plane"] + ["worker"] * 6
    assert {node["image"] for node in nodes} == {KIND_NODE_IMAGE}
    # The system workers tainted for the platform's controllers (issue 24), and one untainted for teams' CPU work.
    system = [n for n in nodes if n.get("labels") == {"mlplatform.io/pool": "system"}]
    assert len(system) == 2
    for worker in system:
        (patch,) = worker["kubeadmConfigPatches"]
        assert yaml.safe_load(patch)["nodeRegistration"]["taints"] == [
            {"key": "CriticalAddonsOnly", "value": "true", "effect": "NoSchedule"}]
    (cpu,) = [n for n in nodes if n.get("labels") == {"mlplatform.io/pool": "cpu"}]
    assert "kubeadmConfigPatches" not in cpu

    gpu_workers = [n for n in nodes if n.get("labels", {}).get("nvidia.com/gpu.present") == "true"]
    assert [n["labels"]["mlplatform.io/pool"] for n in gpu_workers] == ["a100", "a100", "t4"]
    assert gpu_workers[0]["labels"]["mlplatform.io/accelerator"] == "nvidia-a100-80gb"
    # The fake GPU operator simulates GPUs only on nodes that ask for its device plugin and exporter.
    assert all(n["labels"]["nvidia.com/gpu.deploy.device-plugin"] == "true" for n in gpu_workers)
    assert all(n["labels"]["nvidia.com/gpu.deploy.dcgm-exporter"] == "true" for n in gpu_workers)
    for worker in gpu_workers:
        (patch,) = worker["kubeadmConfigPatches"]
        join = yaml.safe_load(patch)
        assert join["kind"] == "JoinConfiguration"
        assert join["nodeRegistration"]["taints"] == [GPU_TAINT]


def test_cluster_is_created_and_deleted_by_the_kind_cli_and_replaced_when_its_shape_changes():
    _, synthesis = _synth()
    (command,) = synthesis.of_type("command:local:Command")
    assert command.inputs["create"].startswith("kind create cluster --config - ")
    assert command.inputs["create"].endswith("&& kind get kubeconfig --name lab")
    assert command.inputs["delete"] == "kind delete cluster --name lab"
    assert command.inputs["triggers"] == [command.inputs["stdin"]]
    assert yaml.safe_load(command.inputs["stdin"])["name"] == "lab"


def test_handle_has_an_explicit_provider_from_the_secret_kubeconfig():
    handle, synthesis = _synth()
    (component,) = synthesis.of_type("mlplatform:cluster:KindCluster")
    (command,) = synthesis.of_type("command:local:Command")
    (provider,) = synthesis.of_type("pulumi:providers:kubernetes")
    assert {command.parent, provider.parent} == {component.urn}
    assert provider.name == "lab-k8s"
    assert provider.inputs["kubeconfig"] in NOT_PLAIN
    assert provider.inputs["enableServerSideApply"] == "true"
    assert command.urn in provider.depends_on

    assert handle.cloud == "kind"
    assert not handle.capabilities.physical_gpus and not handle.capabilities.device_plugin
    assert [(p.name, p.max_gpus, [str(t) for t in p.taints]) for p in handle.gpu_pools] == [
        ("a100", 8, ["nvidia.com/gpu=present:NoSchedule"]), ("t4", 1, ["nvidia.com/gpu=present:NoSchedule"])]
    assert handle.gpu_capacity == 9 == SPEC.gpu_capacity()
