"""A local kind cluster shaped like the cloud clusters: a tainted system pool, a CPU worker for teams, and tainted,
labelled GPU pools."""

from __future__ import annotations

import pulumi
import yaml
from pulumi_command import local

from core.provider import explicit_provider
from core.handle import Capabilities, ClusterHandle, GpuPool, platform_gpu_pool
from core.vocabulary import (CPU_POOL, GPU_TAINT, POOL_LABEL, SIMULATED_GPU_NODE_LABELS, SYSTEM_POOL, SYSTEM_TAINT,
                             Taint)
from versions import KIND_NODE_IMAGE
from clouds.kind.config import KindClusterConfig


class _BlockStyleDumper(yaml.SafeDumper):
    """Writes multi-line strings (kubeadm patches) as YAML blocks, the way people write kind configs."""


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


_BlockStyleDumper.add_representer(str, _represent_str)


def _taint_patch(taint: Taint) -> str:
    # kind has no per-node taint field; kubeadm's JoinConfiguration registers the node already tainted,
    # so no pod can slip onto it before the taint exists.
    join = {"kind": "JoinConfiguration",
            "nodeRegistration": {"taints": [{"key": taint.key, "value": taint.value, "effect": taint.effect}]}}
    return yaml.safe_dump(join, sort_keys=False)




def kind_gpu_pools(spec: KindClusterConfig) -> tuple[GpuPool, ...]:
    return tuple(
        platform_gpu_pool(pool.name, pool.accelerator, gpus_per_node=pool.gpus_per_node, min_nodes=pool.nodes,
                          max_nodes=pool.nodes, spot=False, sharing=pool.sharing)
        for pool in spec.gpu_pools
    )


def render_kind_config(spec: KindClusterConfig) -> str:
    """The kind cluster config (kind.x-k8s.io/v1alpha4) for this spec."""
    nodes: list[dict] = [{"role": "control-plane", "image": KIND_NODE_IMAGE}]
    nodes += [{"role": "worker", "image": KIND_NODE_IMAGE, "labels": {POOL_LABEL: SYSTEM_POOL},
               "kubeadmConfigPatches": [_taint_patch(SYSTEM_TAINT)]}
              for _ in range(spec.system_nodes)]
    # Teams' CPU work (and kind's own local-path provisioner, which tolerates only the control plane's taint).
    nodes += [{"role": "worker", "image": KIND_NODE_IMAGE, "labels": {POOL_LABEL: CPU_POOL}}]
    for pool in kind_gpu_pools(spec):
        nodes += [{"role": "worker", "image": KIND_NODE_IMAGE, "labels": dict(pool.labels) | SIMULATED_GPU_NODE_LABELS,
                   "kubeadmConfigPatches": [_taint_patch(GPU_TAINT)]}
                  for _ in range(pool.max_nodes)]
    document = {"kind": "Cluster", "apiVersion": "kind.x-k8s.io/v1alpha4", "name": spec.name, "nodes": nodes}
    return yaml.dump(document, Dumper=_BlockStyleDumper, sort_keys=False)


class KindCluster(pulumi.ComponentResource):
    handle: ClusterHandle

    def __init__(self, name: str, spec: KindClusterConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlplatform:cluster:KindCluster", name, None, opts)
        kind_config = render_kind_config(spec)
        cluster = local.Command(
            f"{name}-cluster",
            # The kubeconfig is the command's only stdout; progress goes to stderr, which is all that is logged.
            create=(f"kind create cluster --config - --wait 180s >&2 && "
                    f"kind get kubeconfig --name {spec.name}"),
            delete=f"kind delete cluster --name {spec.name}",
            stdin=kind_config,
            logging=local.Logging.STDERR,
            # kind cannot change the nodes of a running cluster: a new shape means a new cluster.
            triggers=[kind_config],
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["stdout"],
                                        delete_before_replace=True),
        )
        kubeconfig = pulumi.Output.secret(cluster.stdout)
        # A laptop cluster is often deleted by hand; `pulumi destroy` must still be able to forget it.
        provider = explicit_provider(self, name, kubeconfig, identity=f"kind/{spec.name}",
                                     delete_unreachable=True)
        self.handle = ClusterHandle(
            identity=f"kind/{spec.name}",
            name=spec.name,
            cloud="kind",
            provider=provider,
            kubeconfig=kubeconfig,
            # kind's local-path volumes live and die with the laptop cluster.
            # kind binds the scheduler and controller manager to all addresses; kubeadm's etcd (127.0.0.1:2381)
            # and kube-proxy (127.0.0.1:10249) serve metrics on loopback only.
            capabilities=Capabilities(gpu_drivers=False, device_plugin=False, physical_gpus=False,
                                      persistent_volumes=False,
                                      scrapeable=frozenset({"scheduler", "controller-manager", "coredns"})),
            gpu_pools=kind_gpu_pools(spec),
            system_max_nodes=spec.system_nodes,
        )
        self.register_outputs({"kubeconfig": kubeconfig})
