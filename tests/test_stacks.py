"""Every stack in the repo: it synthesizes, its manifests are valid, and its URNs do not move by accident."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core.outputs import PlatformOutputs
from synth import PROJECT_DIR, synthesize
from synth.engine import Synthesis
from synth.checks import check
from synth.output import write
from synth.applied import crds_of
from synth.schema import check_manifests, crd_schemas, schemas_of
from synth.stackfile import available_stacks
from synth.render import stack_rendering, stack_synthesis

STACKS = available_stacks(PROJECT_DIR)
SNAPSHOTS = Path(__file__).parent / "snapshots"


@pytest.fixture(scope="module", params=STACKS)
def stack(request):
    # Shared with the other tests of the process; the determinism test below synthesizes afresh.
    return stack_synthesis(request.param)


def test_the_repo_has_the_default_local_stack():
    assert "local" in STACKS


def _built_in(manifest: dict) -> bool:
    group = manifest["apiVersion"].rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io") and not group.startswith("kueue.")


def minor(stack: Synthesis) -> str:
    """The Kubernetes minor the stack's cluster runs, whose schemas its objects must pass."""
    return PlatformOutputs.read(stack.outputs).kubernetes_version


def test_built_in_objects_pass_strict_schema_validation(stack):
    report = check_manifests([m for m in stack.manifests() if _built_in(m)], kubernetes_version=minor(stack))
    assert report.errors == [] and report.unchecked == []
    assert report.checked


def test_every_manifest_passes_its_schema_custom_resources_their_crd(stack, upstream):
    # Against the CRDs the stack installs, rendered from the charts at their pins (upstream/*/crds/ lacks some,
    # such as Kueue's Topology, which its chart has), or else the upstream ones (a team stack installs none).
    crds = crds_of(stack_rendering(stack.stack), stack.manifests())
    report = check_manifests(stack.manifests(), upstream_dir=upstream, kubernetes_version=minor(stack),
                             custom=crd_schemas(upstream) | schemas_of(crds))
    assert report.errors == []
    assert report.unchecked == [], "objects with no schema to check them against"


def test_every_stack_keeps_every_rule(stack):
    assert [str(v) for v in check(stack)] == []


def test_every_kubernetes_object_goes_through_the_clusters_explicit_provider(stack):
    providers = {r.urn for r in stack.of_type("pulumi:providers:kubernetes")}
    assert len(providers) == 1
    for resource in stack.resources:
        if resource.custom and resource.type.startswith("kubernetes:"):
            assert resource.provider in providers, resource.urn


def test_components_follow_the_conventions(stack):
    stack_root = f"urn:pulumi:{stack.stack}::{stack.project}::pulumi:pulumi:Stack::{stack.project}-{stack.stack}"
    for resource in stack.resources:
        if resource.custom:
            # Every resource belongs to a component; only components sit at the top of the stack.
            assert resource.parent != stack_root, f"{resource.urn} has no component parent"
            parent = stack.by_urn(resource.parent)
            assert resource.name.startswith(f"{parent.name}-"), f"{resource.name} is not named after {parent.name}"
        else:
            assert re.fullmatch(r"mlplatform:[a-z]+:[A-Z][A-Za-z]+", resource.type), resource.type


def test_synth_output_is_byte_for_byte_deterministic(stack, tmp_path):
    write(stack, tmp_path / "first")
    write(synthesize(stack.stack), tmp_path / "second")
    first = {p.relative_to(tmp_path / "first"): p.read_bytes() for p in (tmp_path / "first").rglob("*") if p.is_file()}
    second = {p.relative_to(tmp_path / "second"): p.read_bytes() for p in (tmp_path / "second").rglob("*")
              if p.is_file()}
    assert first == second
    assert Path("plan.json") in first


def test_urns_match_the_snapshot(stack):
    """A changed URN replaces real infrastructure: it needs an alias, then a deliberate snapshot update."""
    snapshot = SNAPSHOTS / f"{stack.stack}.urns"
    urns = "".join(f"{r.urn}\n" for r in stack.resources)
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        snapshot.write_text(urns)
    expected = snapshot.read_text() if snapshot.exists() else ""
    added = sorted(set(urns.splitlines()) - set(expected.splitlines()))
    removed = sorted(set(expected.splitlines()) - set(urns.splitlines()))
    assert not removed, ("URNs gone (a `pulumi up` would delete or replace these; add aliases if they were "
                         f"renamed, then run UPDATE_SNAPSHOTS=1 make test): {removed}")
    assert not added, f"new URNs: if intended, record them with UPDATE_SNAPSHOTS=1 make test: {added}"


def test_make_synth_command_writes_the_output_and_a_summary(tmp_path):
    result = subprocess.run([sys.executable, "-m", "synth", "local", "--out", str(tmp_path / "local")],
                            cwd=PROJECT_DIR, capture_output=True, text=True, check=True)
    assert "Stack local: kind cluster 'mlplatform'" in result.stdout
    assert "Team GPUs guaranteed: 4 of 4 GPUs" in result.stdout
    assert "Kueue Cohort 'mlplatform' (above every team cohort) holds the GPUs no team is guaranteed: none" in \
        result.stdout
    assert "research                 1 GPU guaranteed (t4 1), ceiling 3 GPU" in result.stdout
    assert (tmp_path / "local" / "plan.json").is_file()
    assert any((tmp_path / "local" / "manifests").glob("research__resourcequota__*.yaml"))


def test_every_kubernetes_provider_is_tied_to_its_clusters_identity_not_its_kubeconfig(stack):
    """pulumi-kubernetes replaces a provider without a cluster_identifier, and with it every resource on the
    cluster, when the kubeconfig's server or CA changes (a DNS endpoint toggled, a CA rotated): each stack's
    provider names the cluster instead, so only a new cluster replaces it."""
    (provider,) = stack.of_type("pulumi:providers:kubernetes")
    identity = provider.inputs.get("clusterIdentifier")
    assert identity, f"{stack.stack}: the provider has no clusterIdentifier"
    cloud = stack.outputs.get("cloud")
    if cloud in ("kind", "existing"):
        assert identity == f"{cloud}/{stack.outputs['clusterName']}"
    if "team" not in stack.outputs:  # what team stacks' providers take as their platform's identity
        assert "clusterIdentity" in stack.outputs


def test_each_release_waits_for_the_quota_that_admits_its_pods(stack):
    """GKE admits pods of the system-*-critical classes outside kube-system only under a quota that allows them:
    a release created before that quota has its pods refused until the controllers retry."""
    quotas = {r.inputs["metadata"]["namespace"]: r.urn for r in stack.of_type("kubernetes:core/v1:ResourceQuota")
              if r.inputs["metadata"]["name"] == "critical-pods"}
    for release in stack.releases():
        namespace = release.inputs["namespace"]
        if namespace in quotas:
            assert quotas[namespace] in release.depends_on, f"{stack.stack}: {release.name}"
