"""A cluster that exists already, reached through a kubeconfig file; the platform only installs onto it."""

from __future__ import annotations

from pathlib import Path

import pulumi

from core.provider import explicit_provider
from core.handle import Capabilities, ClusterHandle, GpuPool, gpu_pool_labels
from core.vocabulary import GPU_TAINT, HOSTNAME_LABEL, Taint
from clouds.existing.config import ExistingClusterConfig


class ExistingCluster(pulumi.ComponentResource):
    handle: ClusterHandle

    def __init__(self, name: str, spec: ExistingClusterConfig,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlplatform:cluster:ExistingCluster", name, None, opts)
        # The contents, not the path: team stacks read this kubeconfig from the platform stack's outputs.
        kubeconfig = pulumi.Output.secret(Path(spec.kubeconfig).expanduser().read_text())
        test = spec.loopback_test
        self.handle = ClusterHandle(
            identity=f"existing/{spec.name}",
            name=spec.name,
            cloud="existing",
            provider=explicit_provider(self, name, kubeconfig, identity=f"existing/{spec.name}",
                                       context=spec.context),
            kubeconfig=kubeconfig,
            capabilities=Capabilities(gpu_drivers=spec.gpu_drivers_installed,
                                      device_plugin=spec.device_plugin_installed,
                                      physical_gpus=True, persistent_volumes=spec.persistent_volumes,
                                      pods_run=test is None),
            gpu_pools=tuple(
                GpuPool(name=pool.name, accelerator=pool.accelerator, gpus_per_node=pool.gpus_per_node,
                        min_nodes=pool.min_nodes, max_nodes=pool.max_nodes, spot=pool.spot,
                        labels=pool.node_labels or gpu_pool_labels(pool.name, pool.accelerator),
                        taints=(GPU_TAINT,), sharing=pool.sharing, multi_node=pool.multi_node)
                for pool in spec.gpu_pools
            ),
            topology_levels=(*spec.topology_labels, HOSTNAME_LABEL) if spec.topology_labels else (),
            system_node_selector=spec.system_node_labels,
            system_taints=tuple(Taint(t.key, t.value, t.effect) for t in spec.system_node_taints),
            local_charts=test.charts_dir if test else None,
        )
        self.register_outputs({"kubeconfig": kubeconfig})
