"""GPU enablement: make a cluster's GPU pools usable by ML workloads, and only by them.

Per cloud, the right thing: where the cloud runs its own device plugin (GKE) nothing is installed; where
nodes have drivers but no plugin (EKS, most existing clusters) NVIDIA's device plugin is; on kind, which has
no GPUs, Run:ai's fake GPU operator makes the stand-in nodes advertise simulated GPUs and GPU metrics.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml
from pulumi_kubernetes.meta.v1 import ObjectMetaArgs

from core.handle import Capabilities, ClusterHandle, GpuPool, gpu_node_affinity, gpu_tolerations
from core.vocabulary import (DEVICE_PLUGIN_NAMESPACE, FAKE_GPU_NAMESPACE, ML_PRIORITY_CLASSES, POOL_LABEL,
                             SYSTEM_NODE_CRITICAL)
from components import sizing
from components.kube import DaemonSetRef, GpuMetricsSource, helm_release, platform_namespace
from versions import FAKE_GPU_OPERATOR, NVIDIA_DEVICE_PLUGIN
from core.gpus import GPU_MODELS
from core.fields import GpuSharing

# The fake GPU operator's exporter: simulated GPU metrics under DCGM's names, on the stand-in GPU nodes.
FAKE_GPU_METRICS = GpuMetricsSource(FAKE_GPU_NAMESPACE, {"app": "nvidia-dcgm-exporter"}, "gpu-metrics")
# The device plugin config for nodes that carry no pool's config label: whole GPUs, no sharing.
UNSHARED_CONFIG = "unshared"




def device_plugin_config(sharing: GpuSharing) -> dict[str, Any]:
    """One config of NVIDIA's device plugin (its config file format, version v1) for a pool's sharing."""
    config: dict[str, Any] = {"version": "v1", "flags": {"migStrategy": sharing.mig_strategy}}
    if sharing.time_slicing is not None:
        slicing = sharing.time_slicing
        config["sharing"] = {"timeSlicing": {
            "renameByDefault": slicing.rename_by_default,
            "failRequestsGreaterThanOne": slicing.fail_requests_greater_than_one,
            "resources": [{"name": "nvidia.com/gpu", "replicas": slicing.replicas}],
        }}
    return config


def device_plugin_values(pools: tuple[GpuPool, ...], capabilities: Capabilities) -> dict[str, Any]:
    """Values of the nvidia-device-plugin chart: on GPU pool nodes only, one named config per pool."""
    configs = {UNSHARED_CONFIG: device_plugin_config(GpuSharing())}
    configs |= {pool.name: device_plugin_config(pool.sharing) for pool in pools}
    strategy: dict[str, Any] = {}
    if capabilities.gpu_device_list_strategy != "envvar":
        # The chart's DEVICE_LIST_STRATEGY, over every config (and the SYS_ADMIN the plugin then needs).
        strategy["deviceListStrategy"] = capabilities.gpu_device_list_strategy
    return {
        **strategy,
        # Each node picks its pool's config by the nvidia.com/device-plugin.config label the pool sets.
        "config": {"map": {name: yaml.safe_dump(config, sort_keys=False) for name, config in configs.items()},
                   "default": UNSHARED_CONFIG},
        "affinity": gpu_node_affinity(pools),
        "tolerations": gpu_tolerations(pools),
        "priorityClassName": SYSTEM_NODE_CRITICAL,
        "resources": sizing.DEVICE_PLUGIN.resources(),
    }


def fake_gpu_operator_values(pools: tuple[GpuPool, ...]) -> dict[str, Any]:
    """Values of the fake GPU operator: each stand-in pool simulates its accelerator and GPU count."""
    node_pools = {
        pool.name: {
            "gpuProduct": GPU_MODELS[pool.accelerator].product,
            # Time-slicing is imitated the way the real plugin shows it: more nvidia.com/gpu per node.
            "gpuCount": pool.gpus_per_node * pool.sharing.shares_per_gpu,
            "gpuMemory": GPU_MODELS[pool.accelerator].memory_gib * 1024,
        }
        for pool in pools
    }
    mig_strategies = {pool.sharing.mig_strategy for pool in pools}
    return {"topology": {"nodePoolLabelKey": POOL_LABEL, "nodePools": node_pools,
                         "migStrategy": mig_strategies.pop() if mig_strategies else "none"},
            # The one component whose chart sets no resources (its template reads this key).
            "migFaker": {"resources": sizing.FAKE_GPU_COMPONENT.resources()}}


def _size_unsized_containers(name: str, namespace: k8s.core.v1.Namespace,
                              opts: pulumi.ResourceOptions) -> k8s.core.v1.LimitRange:
    """The charts leave some agent containers without requests or limits, with no value to set them."""
    return k8s.core.v1.LimitRange(
        name, metadata=ObjectMetaArgs(name="container-defaults", namespace=namespace.metadata.name),
        spec=k8s.core.v1.LimitRangeSpecArgs(limits=[sizing.UNSIZED_AGENT_CONTAINER.limit_range_item()]),
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[namespace])))


class GpuEnablement(pulumi.ComponentResource):
    def __init__(self, name: str, cluster: ClusterHandle, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlplatform:gpu:GpuEnablement", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=cluster.provider)

        for priority in ML_PRIORITY_CLASSES:
            k8s.scheduling.v1.PriorityClass(
                f"{name}-{priority.name}",
                metadata=ObjectMetaArgs(name=priority.name),
                value=priority.value,
                preemption_policy=priority.preemption_policy,
                global_default=False,
                description=priority.description,
                opts=child,
            )

        self.release: k8s.helm.v3.Release | None = None
        # The device plugin DaemonSet this component installs, for monitoring to watch.
        self.device_plugin: DaemonSetRef | None = None
        # GPU metrics this component already serves, so that monitoring scrapes them instead.
        self.gpu_metrics: GpuMetricsSource | None = None
        pools = cluster.gpu_pools
        if not pools or cluster.capabilities.device_plugin:
            pass  # nothing to advertise, or the cloud advertises GPUs itself
        elif not cluster.capabilities.physical_gpus:
            namespace = platform_namespace(f"{name}-fake-gpu-namespace", FAKE_GPU_NAMESPACE,
                                           component="gpu", pod_security="privileged", opts=child)
            # Pods are admitted after their namespace's defaults exist.
            sized = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[
                _size_unsized_containers(f"{name}-fake-gpu-container-defaults", namespace, child)]))
            self.release = helm_release(f"{name}-fake-gpu-operator", chart=FAKE_GPU_OPERATOR,
                                        namespace=namespace,
                                        values=fake_gpu_operator_values(pools), release_name="fake-gpu-operator",
                                        local_charts=cluster.local_charts,
                                        opts=sized)
            self.device_plugin = DaemonSetRef(FAKE_GPU_NAMESPACE, "device-plugin")
            self.gpu_metrics = FAKE_GPU_METRICS
        else:
            # The plugin mounts the kubelet's device-plugin socket directory from the host.
            namespace = platform_namespace(f"{name}-device-plugin-namespace", DEVICE_PLUGIN_NAMESPACE,
                                           component="gpu", pod_security="privileged", opts=child,
                                           critical_priority_classes=[SYSTEM_NODE_CRITICAL])
            sized = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[
                _size_unsized_containers(f"{name}-device-plugin-container-defaults", namespace, child)]))
            self.release = helm_release(f"{name}-device-plugin", chart=NVIDIA_DEVICE_PLUGIN,
                                        namespace=namespace, values=device_plugin_values(pools, cluster.capabilities),
                                        release_name="nvidia-device-plugin", local_charts=cluster.local_charts,
                                        opts=sized)
            # The chart names its DaemonSet after the release when the release name contains the chart's.
            self.device_plugin = DaemonSetRef(DEVICE_PLUGIN_NAMESPACE, "nvidia-device-plugin")
        self.register_outputs({"priorityClasses": [p.name for p in ML_PRIORITY_CLASSES]})
