"""A cluster given by kubeconfig: the platform installs onto it through an explicit provider."""

from __future__ import annotations

from clouds.existing.cluster import ExistingCluster
from core.handle import ClusterHandle
from clouds.existing.config import ExistingClusterConfig
from synth.engine import SECRET
from tests.conftest import run_component


def test_existing_cluster_handle(tmp_path):
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\ncurrent-context: lab\ncontexts: [{name: lab-admin}]\n")
    spec = ExistingClusterConfig.model_validate({
        "cloud": "existing", "name": "lab", "kubeconfig": str(kubeconfig), "context": "lab-admin",
        "devicePluginInstalled": True, "systemNodeLabels": {"node-role": "infra"},
        "gpuPools": [
            {"name": "h100", "accelerator": "nvidia-h100-80gb", "gpusPerNode": 8, "maxNodes": 4, "spot": True},
            {"name": "l4", "accelerator": "nvidia-l4", "gpusPerNode": 1, "minNodes": 1, "maxNodes": 2,
             "nodeLabels": {"cloud.google.com/gke-accelerator": "nvidia-l4"}},
        ],
    })
    handles: list[ClusterHandle] = []
    synthesis = run_component(lambda: handles.append(ExistingCluster("lab", spec).handle))
    (handle,) = handles

    (component,) = synthesis.of_type("mlplatform:cluster:ExistingCluster")
    (provider,) = synthesis.of_type("pulumi:providers:kubernetes")
    assert provider.parent == component.urn
    assert provider.inputs["context"] == "lab-admin"
    # The kubeconfig's contents travel as a secret, never the path (another machine has no such file).
    assert provider.inputs["kubeconfig"] == SECRET

    assert handle.capabilities.device_plugin and handle.capabilities.gpu_drivers
    assert handle.system_node_selector == {"node-role": "infra"}
    h100, l4 = handle.gpu_pools
    assert h100.labels == {"mlplatform.io/pool": "h100", "mlplatform.io/accelerator": "nvidia-h100-80gb",
                           "nvidia.com/gpu.present": "true", "nvidia.com/device-plugin.config": "h100"}
    assert h100.spot and h100.max_gpus == 32
    assert l4.labels == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert handle.gpu_capacity == 34
