"""The one registry of clouds: a stack's `cluster.cloud` picks one of these config models.

Each cloud is a folder here holding everything that cloud means (its config model, cluster component(s),
machine or instance catalog, IAM helpers, API-reachability check). Its config model meets one contract,
`CloudConfig`, which tests/clouds/test_registry.py checks for every entry: adding a cloud is a new folder, a
line below, its pins in versions.py and its provider resource types in the policy pack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, ClassVar, Protocol, Union, get_args

from pydantic import Field

from clouds.eks.config import EksClusterConfig
from clouds.existing.config import ExistingClusterConfig
from clouds.gke.config import GkeClusterConfig
from clouds.kind.config import KindClusterConfig
from core.deployer import Deployer

if TYPE_CHECKING:
    from core.handle import ClusterHandle


class CloudConfig(Protocol):
    """What every cloud's cluster config provides to the rest of the platform."""

    @property
    def cloud(self) -> str: ...

    @property
    def name(self) -> str: ...

    # Config namespaces (besides the project's) that this cloud's stack files may set: its providers'.
    provider_namespaces: ClassVar[tuple[str, ...]]
    # Secrets providers CI decrypts this cloud's stacks with; empty when CI never deploys them.
    ci_secrets_providers: ClassVar[tuple[str, ...]]

    def build(self) -> ClusterHandle:
        """Create (or adopt) the cluster, inside the running Pulumi program; the handle is all others see."""
        ...

    def unreachable_by(self, deployer: Deployer) -> str | None:
        """Why `deployer` cannot reach this cluster's Kubernetes API, or None when it can."""
        ...


CLOUDS: tuple[type[CloudConfig], ...] = (KindClusterConfig, ExistingClusterConfig, EksClusterConfig, GkeClusterConfig)

ClusterConfig = Annotated[Union[KindClusterConfig, ExistingClusterConfig, EksClusterConfig, GkeClusterConfig],
                          Field(discriminator="cloud")]

# The config namespaces any cloud's stacks may set.
PROVIDER_NAMESPACES: tuple[str, ...] = tuple(sorted({ns for cloud in CLOUDS for ns in cloud.provider_namespaces}))


def cloud_name(model: type[CloudConfig]) -> str:
    """The `cluster.cloud` value that selects a config model."""
    return get_args(model.model_fields["cloud"].annotation)[0]  # type: ignore[attr-defined]
