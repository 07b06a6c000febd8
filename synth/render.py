"""Rendering every Helm release of a synthesized stack offline, with Helm's own engine, as Helm will apply it.

The renderer is `helm-python-sdk` (Helm v4's Go SDK as a shared library, no helm binary). Each release is
rendered by Helm's client-only install dry run (`dry_run: client`), which is `helm template`: it processes
subchart conditions, enforces the chart's `kubeVersion`, and takes the cluster's Kubernetes version and the
API versions its CRDs add (`.Capabilities`). That dry run returns the manifest without hooks, so hooks come
from Helm's plain render of the same chart, values and capabilities (test hooks left out: `helm install`
never creates them), and CRDs from the charts' `crds/` folders (of the chart and its enabled subcharts),
which Helm installs before anything else.

API, for the synth and for tests (stable; other branches build on it):

- `render_stack(synthesis) -> Rendering`: every Helm release of the stack. `Rendering.releases` maps the
  release name to a `RenderedRelease` (`release`, `namespace`, `chart` (a `versions.Chart`), `objects`);
  `Rendering.unavailable` maps a release name to why its chart could not be had and how to get it (the rest
  still renders); `Rendering.objects()` is every object of every release.
- `rendered_objects(synthesis) -> dict[str, list[dict]]`: release name -> its objects.
- `stack_rendering(stack) -> Rendering` and `stack_synthesis(stack) -> Synthesis`: a stack file's rendering
  and the synthesis it renders, cached per process, for tests.
- `charts_available()`: whether any chart folder holds a chart (tests skip by name where not).
- `unrendered_warnings(rendering)`: the warnings `make synth` counts for releases it could not render.

Every object carries the annotations `mlplatform.io/helm-release` (`<namespace>/<release>`),
`mlplatform.io/helm-chart` (`<chart>-<version>`) and `mlplatform.io/helm-source` (the template or CRD file
it came from). These are the synth's bookkeeping, not something Helm applies. Namespaced objects without a
namespace get the release's, as Helm applies them. Hooks keep Helm's `helm.sh/hook` annotation.

Where charts come from, first hit wins (see `chart_dirs`): the folders in `$MLPLATFORM_CHARTS`
(os.pathsep-separated), the pull cache `~/.cache/mlplatform/charts`, and `../shared/upstream/charts`. Each
holds a chart as `<name>-<version>/`, the chart's own folder as `helm pull --untar` gives it. A declared
dependency missing from a chart's `charts/` is taken from the same folders as `<dependency>-<version>/`.
With `MLPLATFORM_PULL_CHARTS=1` (a machine that reaches the chart repositories), a chart found nowhere is
pulled once into the pull cache, its package checked against the pinned digest where `versions.py` has one
(a chart pulled without one is a warning naming the digest to pin). A pull is atomic: a failed one leaves the
cache as it was, and after a repository fails to answer, no other pull is tried.

Each chart is loaded once per process, and each (chart, values, namespace, capabilities) rendered once.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from core.outputs import PlatformOutputs
from synth.engine import Resource, Synthesis
from synth.schema import UPSTREAM_DIR
from versions import CHARTS, Chart

CHARTS_ENV = "MLPLATFORM_CHARTS"
PULL_ENV = "MLPLATFORM_PULL_CHARTS"
PULL_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mlplatform" / "charts"

RELEASE_ANNOTATION = "mlplatform.io/helm-release"
CHART_ANNOTATION = "mlplatform.io/helm-chart"
SOURCE_ANNOTATION = "mlplatform.io/helm-source"
HOOK_ANNOTATION = "helm.sh/hook"
# `helm install` runs no test hook; `helm test` does.
_TEST_HOOKS = {"test", "test-success", "test-failure"}

# Built-in kinds that live outside namespaces; kinds of custom resources say so in their CRD.
CLUSTER_SCOPED_KINDS = frozenset({
    "APIService", "CertificateSigningRequest", "ClusterRole", "ClusterRoleBinding", "CSIDriver", "CSINode",
    "CustomResourceDefinition", "DeviceClass", "FlowSchema", "IngressClass", "MutatingAdmissionPolicy",
    "MutatingAdmissionPolicyBinding", "MutatingWebhookConfiguration", "Namespace", "Node", "PersistentVolume",
    "PriorityClass", "PriorityLevelConfiguration", "RuntimeClass", "StorageClass", "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding", "ValidatingWebhookConfiguration", "VolumeAttachment",
})


class ChartUnavailable(Exception):
    """A chart (or one of its dependencies) that is in none of the chart folders; the message says how to get it."""


@dataclass(frozen=True)
class RenderedRelease:
    release: str
    namespace: str
    chart: Chart
    objects: list[dict[str, Any]]


@dataclass
class Rendering:
    kubernetes_version: str
    releases: dict[str, RenderedRelease] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)

    def objects(self) -> list[dict[str, Any]]:
        return [obj for release in self.releases.values() for obj in release.objects]


def chart_dirs() -> list[Path]:
    """The folders charts are read from, in order: $MLPLATFORM_CHARTS, the pull cache, ../shared/upstream/charts."""
    named = [Path(part) for part in os.environ.get(CHARTS_ENV, "").split(os.pathsep) if part]
    return [*named, PULL_CACHE, UPSTREAM_DIR / "charts"]


def charts_available() -> bool:
    """Whether any chart folder holds a chart (an empty or half-made folder is not charts)."""
    return any(directory.is_dir() and any(directory.glob("*/Chart.yaml")) for directory in chart_dirs())


def _version_matches(constraint: str, version: str) -> bool:
    # Chart.yaml dependencies pin exactly or with a wildcard ("0.12.*"); nothing in our charts uses ranges. Some
    # charts' versions carry a "v" (eks-charts' aws-efa-k8s-device-plugin v0.5.30), on the pin and folder alike.
    return fnmatch.fnmatchcase(version.removeprefix("v"), constraint.lstrip("=v"))


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def _find_chart_dir(name: str, constraint: str) -> Path | None:
    """The newest `<name>-<version>/` matching the constraint in the first chart folder that has one."""
    for directory in chart_dirs():
        if not directory.is_dir():
            continue
        found = [path for path in directory.glob(f"{name}-*")
                 if path.is_dir() and _version_matches(constraint, path.name[len(name) + 1:])]
        if found:
            return max(found, key=lambda path: _version_key(path.name[len(name) + 1:]))
    return None


def _how_to_get(name: str, version: str, repository: str | None, needed_by: str = "") -> str:
    where = ", ".join(str(path) for path in chart_dirs())
    if repository is None:
        pull = f"`helm pull {name} --version {version} --untar`"
    elif repository.startswith("oci://"):
        pull = f"`helm pull {repository}/{name} --version {version} --untar`"
    else:
        pull = f"`helm pull {name} --repo {repository} --version {version} --untar`"
    return (f"chart {name} {version}{needed_by} is in none of {where}: get it with {pull} into a folder named "
            f"{name}-{version} there (or set {CHARTS_ENV}), or set {PULL_ENV}=1 where the repository is reachable")


@dataclass
class Pulled:
    """What this process pulled, and why pulling stopped (the first failure to reach a repository)."""

    unpinned: dict[str, str] = field(default_factory=dict)  # `<chart>-<version>` -> the digest it got
    unreachable: str | None = None


PULLED = Pulled()


def _pull(chart: Chart) -> Path | None:
    """Pull a pinned chart's package into the pull cache and unpack it, checking the pinned digest; None unless
    enabled. Atomic: the chart is assembled beside the cache and renamed into it whole, so a failed pull (no
    network, a wrong digest) leaves the cache as it was."""
    if os.environ.get(PULL_ENV) != "1":
        return None
    if PULLED.unreachable is not None:
        raise ChartUnavailable(PULLED.unreachable)
    import helm_python as helm

    PULL_CACHE.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=PULL_CACHE.parent, prefix=".charts-pull-") as work:
        try:
            if chart.is_oci:
                result = helm.pull(f"{chart.repository}/{chart.name}", version=chart.version, destination=work)
            else:
                result = helm.pull(chart.name, repo_url=chart.repository, version=chart.version, destination=work)
        except helm.HelmError as exc:
            PULLED.unreachable = (f"{PULL_ENV}=1, but pulling {chart.name} {chart.version} from {chart.repository} "
                                  f"failed ({str(exc).strip().splitlines()[-1]}); no chart was pulled after it")
            raise ChartUnavailable(PULLED.unreachable) from exc
        archive = Path(result["output"]) if Path(result["output"]).is_file() else \
            Path(work) / f"{chart.name}-{chart.version}.tgz"
        digest = "sha256:" + helm.digest(archive).removeprefix("sha256:")
        if chart.digest is None:
            PULLED.unpinned[f"{chart.name}-{chart.version}"] = digest
        elif digest != "sha256:" + chart.digest.removeprefix("sha256:"):
            raise ChartUnavailable(f"chart {chart.name} {chart.version} pulled from {chart.repository} has digest "
                                   f"{digest}, not the pinned {chart.digest}: not used, not cached")
        unpacked = Path(work) / "unpacked"
        helm.expand(unpacked, archive)
        PULL_CACHE.mkdir(exist_ok=True)
        target = PULL_CACHE / f"{chart.name}-{chart.version}"
        os.replace(unpacked / chart.name, target)
    return target


def pull_warnings() -> list[str]:
    """What the pulls of this process leave to say: charts taken without a digest to check them against."""
    return [f"chart {name} was pulled without a pinned digest to check it against; it has {digest}: pin it as "
            f"Chart(..., digest=\"{digest}\") in versions.py" for name, digest in sorted(PULLED.unpinned.items())]


def _declared_dependencies(chart_dir: Path) -> list[dict[str, Any]]:
    metadata = yaml.safe_load((chart_dir / "Chart.yaml").read_text()) or {}
    return list(metadata.get("dependencies") or [])


def _present_dependencies(chart_dir: Path) -> set[str]:
    """Names of the charts under chart_dir/charts/, unpacked or packaged."""
    present: set[str] = set()
    for path in (chart_dir / "charts").glob("*"):
        if path.is_dir() and (path / "Chart.yaml").is_file():
            present.add(str(yaml.safe_load((path / "Chart.yaml").read_text())["name"]))
        elif path.suffix == ".tgz":
            present.add(path.name.rsplit("-", 1)[0])
    return present


@cache
def _load(name: str, version: str, repository: str | None) -> Any:
    """The chart, loaded by Helm once per process, with dependencies its folder lacks filled in from the others."""
    import helm_python as helm

    chart_dir = _find_chart_dir(name, version)
    if chart_dir is None:
        pinned = next((c for c in CHARTS if c.name == name and c.version == version), None)
        chart_dir = _pull(pinned) if pinned else None
    if chart_dir is None:
        raise ChartUnavailable(_how_to_get(name, version, repository))
    present = _present_dependencies(chart_dir)
    missing = [dep for dep in _declared_dependencies(chart_dir) if dep["name"] not in present]
    if not missing:
        return helm.Chart.load(chart_dir)
    with tempfile.TemporaryDirectory() as work:
        # Helm loads a chart from one folder: assemble it with the dependencies found beside it. The loaded
        # chart lives in memory, so the copy goes once loaded.
        assembled = Path(work) / chart_dir.name
        shutil.copytree(chart_dir, assembled)
        for dep in missing:
            found = _find_chart_dir(dep["name"], str(dep["version"]))
            if found is None:
                raise ChartUnavailable(_how_to_get(dep["name"], str(dep["version"]), dep.get("repository"),
                                                   f", which chart {name} {version} depends on,"))
            shutil.copytree(found, assembled / "charts" / found.name)
        return helm.Chart.load(assembled)


def _lookup(values: dict[str, Any], path: str) -> Any:
    value: Any = values
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _enabled_subcharts(chart: Any, merged: dict[str, Any]) -> set[str]:
    """Names (aliases) of the chart's direct dependencies that Helm enables: the first of a dependency's
    `condition` paths that holds a bool decides, as in Helm's ProcessDependencyEnabled; none enables it."""
    enabled = set()
    for dep in chart.metadata.get("dependencies") or []:
        decision = True
        for path in str(dep.get("condition") or "").split(","):
            value = _lookup(merged, path.strip()) if path.strip() else None
            if isinstance(value, bool):
                decision = value
                break
        if decision:
            enabled.add(dep.get("alias") or dep["name"])
    return enabled


def _source_enabled(source: str, enabled: set[str]) -> bool:
    """Whether a template or CRD path (`<chart>/charts/<sub>/...`) belongs to the chart or an enabled subchart."""
    parts = source.split("/")
    return not (len(parts) > 2 and parts[1] == "charts" and parts[2] not in enabled)


def _documents(text: str, source: str) -> Iterable[tuple[str, dict[str, Any]]]:
    import helm_python as helm

    current = source
    for chunk in re.split(r"^---\s*$", text, flags=re.MULTILINE):
        match = re.search(r"^# Source: (.+)$", chunk, flags=re.MULTILINE)
        if match:
            current = match.group(1).strip()
        if not re.search(r"^[^#\s]", chunk, flags=re.MULTILINE):
            continue
        # Helm's own YAML reader (Go, sigs.k8s.io/yaml): Kubernetes' reading of YAML, and fast on large CRDs.
        document = helm.values_from_yaml(chunk)
        if isinstance(document, dict) and document.get("kind"):
            yield current, document


@cache
def _render_cached(name: str, version: str, repository: str | None, release: str, namespace: str,
                   values_json: str, kube_version: str, api_versions: tuple[str, ...],
                   skip_crds: bool = False) -> str:
    """The release's objects as JSON text: (source, object) pairs, manifest, hooks and CRDs."""
    from helm_python import _native

    chart = _load(name, version, repository)
    values = json.loads(values_json)
    options = {"kube_version": kube_version, "api_versions": list(api_versions)}
    # The helm-python-sdk 0.2.2 wrappers do not pass the capability options on, which the library takes.
    installed = json.loads(_native.call_string(
        "helm_install", _install_config(namespace)._raw(), _native.HANDLE(0), chart._raw(), None, release,
        values_json, json.dumps({"dry_run": "client", "namespace": namespace, **options})))
    objects = list(_documents(installed["manifest"], ""))
    enabled = _enabled_subcharts(chart, chart.merge_values(values))
    rendered = json.loads(_native.call_string("helm_render", chart._raw(), values_json, json.dumps(
        {"name": release, "namespace": namespace, "is_install": True, **options})))
    for source, text in sorted(rendered.items()):
        # Only hooks are wanted here: skip the rest unparsed (NOTES.txt is not YAML at all).
        if source.endswith("NOTES.txt") or HOOK_ANNOTATION not in text or not _source_enabled(source, enabled):
            continue
        for _, document in _documents(text, source):
            hooks = set(((document.get("metadata") or {}).get("annotations") or {}).get(HOOK_ANNOTATION, "")
                        .replace(" ", "").split(",")) - {""}
            if hooks and not hooks <= _TEST_HOOKS:
                objects.append((source, document))
    # A Release with skipCrds installs none of the crds/ folders (another release or chart owns them).
    objects += [(source, crd) for source, crd in _chart_crds(name, version, repository)
                if _source_enabled(source, enabled) and not skip_crds]
    return json.dumps(objects)


@cache
def _templated_crds(name: str, version: str, repository: str | None, namespace: str, values_json: str,
                    kube_version: str) -> str:
    """The CRDs a chart's templates make, from Helm's plain render (cheaper than the dry run, enough for CRDs)."""
    from helm_python import _native

    chart = _load(name, version, repository)
    rendered = json.loads(_native.call_string("helm_render", chart._raw(), values_json, json.dumps(
        {"namespace": namespace, "is_install": True, "kube_version": kube_version})))
    return json.dumps([document for source, text in sorted(rendered.items())
                       if "CustomResourceDefinition" in text and not source.endswith("NOTES.txt")
                       for _, document in _documents(text, source)
                       if document.get("kind") == "CustomResourceDefinition"])


@dataclass(frozen=True)
class _Traits:
    templates_crds: bool
    asks_api_versions: bool


@cache
def _traits(name: str, version: str, repository: str | None) -> _Traits:
    templates = [template["data"] for template in _load(name, version, repository).templates]
    return _Traits(templates_crds=any("CustomResourceDefinition" in text for text in templates),
                   asks_api_versions=any("APIVersions" in text for text in templates))


@cache
def _chart_crds(name: str, version: str, repository: str | None) -> list[tuple[str, dict[str, Any]]]:
    """The CRDs in the `crds/` folders of the chart and its subcharts, which no value changes."""
    return [(crd["filename"], document) for crd in _load(name, version, repository).crds
            for _, document in _documents(crd["data"], crd["filename"])]


@cache
def _install_config(namespace: str) -> Any:
    import helm_python as helm

    # Client-only dry runs touch no cluster; the memory driver keeps Helm from looking for release Secrets.
    return helm.Config(namespace=namespace, storage_driver="memory")


def chart_of(release: Resource) -> Chart:
    """The pinned Chart a Release installs (versions.py), or one made from its inputs if it is not pinned there."""
    reference = str(release.inputs.get("chart", ""))
    version = str(release.inputs.get("version", ""))
    for chart in CHARTS:
        # By name in its repository, or as a folder named as `helm pull --untar` names it (a local chart).
        local = reference.rstrip("/").endswith(f"/{chart.name}-{chart.version}")
        if chart.version == version and (local or reference in (chart.name, f"{chart.repository}/{chart.name}")):
            return chart
    repository = (release.inputs.get("repositoryOpts") or {}).get("repo") or reference.rsplit("/", 1)[0]
    return Chart(reference.rsplit("/", 1)[-1], repository, version)


def kubernetes_version(synthesis: Synthesis) -> str:
    """The cluster's Kubernetes version, as `helm template --kube-version` takes it."""
    return f"v{PlatformOutputs.read(synthesis.outputs).kubernetes_version}.0"


def _crd_api_versions(documents: Iterable[dict[str, Any]]) -> set[str]:
    versions = set()
    for crd in documents:
        if crd.get("kind") != "CustomResourceDefinition":
            continue
        spec = crd.get("spec") or {}
        for version in spec.get("versions") or []:
            group_version = f"{spec.get('group')}/{version.get('name')}"
            versions |= {group_version, f"{group_version}/{(spec.get('names') or {}).get('kind')}"}
    return versions


def _label(document: dict[str, Any], source: str, release: Resource, chart: Chart,
           cluster_scoped: set[str]) -> dict[str, Any]:
    namespace = str(release.inputs.get("namespace") or "default")
    metadata = document.setdefault("metadata", {}) or {}
    document["metadata"] = metadata
    if document.get("kind") not in cluster_scoped and not metadata.get("namespace"):
        metadata["namespace"] = namespace
    annotations = metadata.get("annotations") or {}
    metadata["annotations"] = annotations | {
        RELEASE_ANNOTATION: f"{namespace}/{release.inputs.get('name') or release.name}",
        CHART_ANNOTATION: f"{chart.name}-{chart.version}",
        SOURCE_ANNOTATION: source,
    }
    return document


def render_stack(synthesis: Synthesis) -> Rendering:
    """Every Helm release of the stack, rendered for its cluster's Kubernetes version and the API versions its
    charts' CRDs add (the cluster after `pulumi up`, when a chart's `.Capabilities` checks see them)."""
    kube = kubernetes_version(synthesis)
    rendering = Rendering(kubernetes_version=kube)
    releases = synthesis.releases()

    def render(release: Resource, api_versions: tuple[str, ...]) -> list[tuple[str, dict[str, Any]]]:
        chart = chart_of(release)
        name = str(release.inputs.get("name") or release.name)
        namespace = str(release.inputs.get("namespace") or "default")
        values = json.dumps(release.inputs.get("values") or {}, sort_keys=True)
        return json.loads(_render_cached(chart.name, chart.version, chart.repository, name, namespace, values,
                                         kube, api_versions, bool(release.inputs.get("skipCrds"))))

    def templated_crds(release: Resource) -> list[dict[str, Any]]:
        chart = chart_of(release)
        values = json.dumps(release.inputs.get("values") or {}, sort_keys=True)
        return json.loads(_templated_crds(chart.name, chart.version, chart.repository,
                                          str(release.inputs.get("namespace") or "default"), values, kube))

    # The CRDs every chart installs (the cluster after `pulumi up`), for the charts whose templates ask
    # `.Capabilities.APIVersions`: from the charts' crds/ folders, and from the charts that template CRDs.
    first: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    crds: list[dict[str, Any]] = []
    from helm_python import HelmError

    for release in releases:
        chart = chart_of(release)
        try:
            _load(chart.name, chart.version, chart.repository)  # first, as the renders below are cached
            traits = _traits(chart.name, chart.version, chart.repository)
            if not release.inputs.get("skipCrds"):
                crds += [crd for _, crd in _chart_crds(chart.name, chart.version, chart.repository)]
            if not traits.asks_api_versions:
                first[release.name] = render(release, ())
                crds += [document for _, document in first[release.name]]
            elif traits.templates_crds:
                crds += templated_crds(release)
        except (ChartUnavailable, HelmError) as exc:
            rendering.unavailable[str(release.inputs.get("name") or release.name)] = str(exc)
    api_versions = tuple(sorted(_crd_api_versions(crds)))
    cluster_scoped = set(CLUSTER_SCOPED_KINDS) | {
        crd["spec"]["names"]["kind"] for crd in crds
        if crd.get("kind") == "CustomResourceDefinition" and crd["spec"].get("scope") == "Cluster"}
    for release in releases:
        chart = chart_of(release)
        name = str(release.inputs.get("name") or release.name)
        if name in rendering.unavailable:
            continue
        try:
            pairs = first[release.name] if release.name in first and not _traits(
                chart.name, chart.version, chart.repository).asks_api_versions else render(release, api_versions)
        except HelmError as exc:
            rendering.unavailable[name] = str(exc)
            continue
        objects = [_label(document, source, release, chart, cluster_scoped) for source, document in pairs]
        rendering.releases[name] = RenderedRelease(name, str(release.inputs.get("namespace") or "default"),
                                                   chart, objects)
    return rendering


def unrendered_warnings(rendering: Rendering) -> list[str]:
    """One warning per release not rendered, saying what was therefore not checked and how to get its chart;
    releases that failed for one reason (an unreachable repository) share one."""
    by_reason: dict[str, list[str]] = {}
    for name, why in sorted(rendering.unavailable.items()):
        by_reason.setdefault(why, []).append(name)
    return [f"Helm release {', '.join(names)} not rendered, so what it applies was not checked (schemas, CEL "
            f"rules, policies, placement, requests per pool, checkov): {why}"
            for why, names in by_reason.items()] + pull_warnings()


def clear_caches() -> None:
    """Forget loaded charts and renders (after the chart folders change, as in tests)."""
    for cached in (_load, _render_cached, _templated_crds, _traits, _chart_crds, stack_rendering, stack_synthesis):
        cached.cache_clear()


def rendered_objects(synthesis: Synthesis) -> dict[str, list[dict[str, Any]]]:
    """Release name -> every object it creates (copies: callers may change them)."""
    return {name: copy.deepcopy(release.objects) for name, release in render_stack(synthesis).releases.items()}


@cache
def stack_synthesis(stack: str) -> Synthesis:
    """A stack file's synthesis, once per process (tests share it); do not change it."""
    from synth import synthesize

    return synthesize(stack)


@cache
def stack_rendering(stack: str) -> Rendering:
    """A stack file's rendering, once per process (tests share it); do not change the objects."""
    return render_stack(stack_synthesis(stack))
