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


def test_a_loopback_test_cluster_installs_charts_from_a_folder_and_leaves_out_what_needs_running_pods(tmp_path):
    """make e2e's one list of differences: only a stack that sets loopbackTest gets them."""
    from policies import rules
    from tests.conftest import synth_with

    kubeconfig = tmp_path / "config"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    cluster = {"cloud": "existing", "name": "lab", "kubeconfig": str(kubeconfig),
               "gpuPools": [{"name": "a100", "accelerator": "nvidia-tesla-a100", "gpusPerNode": 4, "maxNodes": 1}]}
    real = synth_with(cluster=cluster)
    test = synth_with(cluster=cluster | {"loopbackTest": {"chartsDir": "/charts"}})
    for release in test.releases():
        inputs = release.inputs
        assert inputs["chart"] == f"/charts/{rules.chart_name(inputs)}-{inputs['version']}"
        assert "repositoryOpts" not in inputs
    assert all("repositoryOpts" in r.inputs or r.inputs["chart"].startswith("oci://") for r in real.releases())

    def operator_webhooks(synthesis):
        (stack,) = [r for r in synthesis.releases() if r.inputs["name"] == "kube-prometheus-stack"]
        return stack.inputs["values"]["prometheusOperator"]["admissionWebhooks"]["enabled"]

    assert operator_webhooks(real) is True and operator_webhooks(test) is False
    # The policy pack still knows each chart by its name, whatever folder it comes from.
    assert rules.chart_name({"chart": "/charts/nvidia-device-plugin-0.20.0", "version": "0.20.0"}) == \
        "nvidia-device-plugin"
