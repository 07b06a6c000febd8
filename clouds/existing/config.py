"""The config of a cluster the platform does not create, reached through a kubeconfig file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Annotated, Literal

import yaml
from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from core.deployer import Deployer
from core.vocabulary import HOSTNAME_LABEL
from core.fields import (Accelerator, DnsLabel, GpuPools, GpuSharing, LabelKey, Labels, Model, PoolName,
                         ScalingGpuPool, check_multi_node, unique_items, unique_names)

if TYPE_CHECKING:
    from core.handle import ClusterHandle


class ExistingGpuPool(ScalingGpuPool):
    """A GPU pool that already exists: its nodes must carry the GPU taint and these labels."""

    name: PoolName
    accelerator: Accelerator
    gpus_per_node: int = Field(ge=1, le=16)
    spot: bool = False
    # Labels that select this pool's nodes; by default the platform's own pool labels.
    node_labels: Labels | None = None
    # Placed for multi-node jobs: Kueue admits them here by the cluster's topologyLabels, as gangs of whole nodes.
    multi_node: bool = False

    @model_validator(mode="after")
    def _whole_nodes(self) -> ExistingGpuPool:
        if self.multi_node:
            check_multi_node(self.sharing, self.max_nodes)
        return self

    def gpu_capacity(self) -> int:
        return self.max_nodes * self.gpus_per_node * self.sharing.shares_per_gpu


def _kubeconfig_file(value: str) -> str:
    try:
        path = Path(value).expanduser()
    except RuntimeError:  # ~user of no such user, or no home directory to expand ~ to
        raise ValueError(f"{value!r} cannot be expanded: no home directory for its ~; give the kubeconfig's full "
                         "path") from None
    try:
        text = path.read_text(encoding="utf-8") if path.is_file() else None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"the kubeconfig at {value!r} cannot be read ({exc}); give a readable kubeconfig") from None
    if text is None:
        raise ValueError(f"no kubeconfig file at {value!r}; give the path of a kubeconfig for this cluster")
    if not isinstance(_kubeconfig_document(text), dict):
        raise ValueError(f"{value!r} is not a kubeconfig (a YAML mapping with clusters, users and contexts)")
    return value


def _kubeconfig_document(text: str) -> object:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None


def kubeconfig_contexts(path: str) -> list[str]:
    document = _kubeconfig_document(Path(path).expanduser().read_text(encoding="utf-8"))
    contexts = document.get("contexts") if isinstance(document, dict) else None
    return [entry["name"] for entry in contexts or [] if isinstance(entry, dict) and isinstance(entry.get("name"), str)]


class LoopbackTest(Model):
    """The cluster is `make e2e`'s loopback cluster: what it cannot do that a real one does, in one place.

    Only e2e stacks set it. Its pods do not really run (kwok only marks them Running), so charts leave out the
    webhooks and Jobs that need a pod to do work. Everything else runs the production code path."""

    # No chart repository is reachable from it: charts are installed from this folder (<name>-<version>/, as
    # `helm pull --untar` gives them, such as ../shared/upstream/charts).
    charts_dir: str


class NodeTaint(Model):
    key: LabelKey
    value: str = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class ExistingClusterConfig(GpuPools, Model):
    """A cluster the platform does not create, reached through a kubeconfig file."""

    cloud: Literal["existing"]
    # The cloud contract (clouds/__init__.py): the config namespaces its stacks may set, and the secrets
    # providers CI decrypts its stacks with (none: CI never deploys this cloud's stacks).
    provider_namespaces: ClassVar[tuple[str, ...]] = ()
    ci_secrets_providers: ClassVar[tuple[str, ...]] = ()

    def build(self) -> ClusterHandle:
        from clouds.existing.cluster import ExistingCluster  # only this cloud's stacks load its SDK
        return ExistingCluster(self.name, self).handle

    def unreachable_by(self, deployer: Deployer) -> str | None:
        """An existing cluster is reached from where its kubeconfig works: nothing to check."""
        return None

    name: DnsLabel
    kubeconfig: Annotated[str, AfterValidator(_kubeconfig_file)] = "~/.kube/config"
    context: str | None = None
    # What the cluster's nodes already have, so that the platform does not install it twice.
    gpu_drivers_installed: bool = True
    device_plugin_installed: bool = False
    # Labels of the nodes where platform controllers should run; empty means any node without a taint.
    system_node_labels: Labels = {}
    # The taints those nodes carry (set by whoever manages them), which every platform controller then
    # tolerates; with none, teams' CPU pods may land on them too (docs/configuration.md).
    system_node_taints: Annotated[list[NodeTaint], Field(max_length=8)] = []
    # Whether PersistentVolumeClaims get durable volumes (a default StorageClass exists).
    persistent_volumes: bool = True
    # The node labels of the cluster's network hierarchy, outermost first (such as a block, then a rack): what
    # Kueue places multi-node jobs by; kubernetes.io/hostname is added as the lowest level. Set by whoever
    # labels the nodes (the cloud, or you); empty when nodes carry none, and then no pool can be multiNode.
    topology_labels: Annotated[list[LabelKey], unique_items("topology label")] = Field(default=[], max_length=15)
    gpu_pools: list[ExistingGpuPool] = []
    loopback_test: LoopbackTest | None = None

    @model_validator(mode="after")
    def _taints_of_labelled_nodes(self) -> ExistingClusterConfig:
        if self.system_node_taints and not self.system_node_labels:
            raise ValueError("systemNodeTaints: the platform's controllers would tolerate the taints of nodes it "
                             "does not select; set systemNodeLabels to the labels of those nodes too")
        return self

    @model_validator(mode="after")
    def _context_in_kubeconfig(self) -> ExistingClusterConfig:
        if self.context is not None and self.context not in (contexts := kubeconfig_contexts(self.kubeconfig)):
            raise ValueError(f"context: {self.context!r} is not a context of {self.kubeconfig}; its contexts: "
                             f"{', '.join(contexts) or 'none'}")
        return self

    @field_validator("topology_labels")
    @classmethod
    def _hostname_is_added(cls, labels: list[str]) -> list[str]:
        if HOSTNAME_LABEL in labels:
            raise ValueError(f"{HOSTNAME_LABEL} is always the lowest level: leave it out of topologyLabels")
        return labels

    @field_validator("gpu_pools")
    @classmethod
    def _unique_pools(cls, pools: list[ExistingGpuPool], info: ValidationInfo) -> list[ExistingGpuPool]:
        if not info.data.get("topology_labels"):
            for index, pool in enumerate(pools):
                if pool.multi_node:
                    raise ValueError(f"[{index}].multiNode: nothing places multi-node jobs on this cluster: set "
                                     "cluster.topologyLabels to the node labels of its network hierarchy, "
                                     "outermost first (such as a block label, then a rack label), so that Kueue "
                                     "admits a job's nodes close together")
        if info.data.get("device_plugin_installed"):
            for index, pool in enumerate(pools):
                if pool.sharing != GpuSharing():
                    raise ValueError(f"[{index}].sharing: this cluster runs its own device plugin "
                                     "(devicePluginInstalled), so the platform cannot configure GPU sharing; "
                                     "configure it in that device plugin and remove sharing here")
        return unique_names(pools, "GPU pool")
