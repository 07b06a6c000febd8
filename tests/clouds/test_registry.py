"""Every cloud in the registry meets the contract the rest of the platform relies on."""

from __future__ import annotations

import inspect

import pytest

import clouds
from clouds import CLOUDS, cloud_name
from synth import PROJECT_DIR


@pytest.mark.parametrize("model", CLOUDS, ids=cloud_name)
def test_each_cloud_meets_the_contract(model):
    folder = PROJECT_DIR / "clouds" / model.__module__.split(".")[1]
    assert model.__module__ == f"clouds.{folder.name}.config", "a cloud's config lives in clouds/<cloud>/config.py"
    assert (folder / "cluster.py").is_file(), "and its cluster component in clouds/<cloud>/cluster.py"
    for member in ("build", "unreachable_by"):
        assert member in vars(model), f"{model.__name__} defines {member} itself"
    assert isinstance(model.provider_namespaces, tuple) and isinstance(model.ci_secrets_providers, tuple)
    assert all(p.endswith("://") for p in model.ci_secrets_providers)
    # Building the cluster imports the cloud's cluster module only then: other clouds' stacks never load its SDK.
    assert f"clouds.{folder.name}.cluster" in inspect.getsource(model.build)


def test_the_registry_is_the_only_list_of_clouds():
    names = [cloud_name(model) for model in CLOUDS]
    assert len(set(names)) == len(names)
    # Every cloud folder is registered, and every registered cloud has its folder.
    assert {p.name for p in (PROJECT_DIR / "clouds").iterdir() if (p / "config.py").exists()} == \
        {model.__module__.split(".")[1] for model in CLOUDS}
    assert set(clouds.PROVIDER_NAMESPACES) == {ns for model in CLOUDS for ns in model.provider_namespaces}
