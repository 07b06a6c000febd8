"""make e2e runs the Kueue and JobSet charts' controllers as processes standing for their Deployments' pods
(e2e/cluster.py, ChartController): what it reads from their objects must be what the pinned charts render, so
that a chart bump that moves one fails here, in make test, before make e2e; and JobSet, which waits for its
certificates at a fixed path under /tmp, gets them there in a /tmp of its own."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from e2e.cluster import JOBSET as JOBSET_CONTROLLER
from e2e.cluster import (CHART_CONTROLLERS, JOBSET_CERT_DIR, ChartController, ClusterError, LoopbackCluster,
                         _config_source, _pod_args, _secret_mount_path, _webhook_secret)
from synth.applied import applied_objects
from synth.render import stack_rendering, stack_synthesis
from versions import JOBSET, KUEUE

CHARTS = {"kueue": f"kueue-{KUEUE.version}", "jobset": f"jobset-{JOBSET.version}"}


def released(controller: ChartController) -> list[dict[str, Any]]:
    """The objects of the controller's release as the local stack applies them (the charts render alike on the
    e2e stack)."""
    objects = applied_objects(stack_synthesis("local"), stack_rendering("local"))
    return [o for o in objects
            if (o["metadata"].get("annotations") or {}).get("mlplatform.io/helm-chart") == CHARTS[controller.tool]]


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


@pytest.mark.parametrize("controller", CHART_CONTROLLERS, ids=lambda c: c.tool)
def test_the_harness_finds_what_it_runs_a_controller_with_in_its_charts_objects(charts, controller):
    objects = released(controller)
    deployment = named(objects, "Deployment", controller.deployment)
    assert deployment["metadata"]["namespace"] == controller.namespace
    template = deployment["spec"]["template"]
    # kwok leaves these pods to the harness (made Ready when the controller serves): the labels must be theirs.
    assert controller.pod_labels.items() <= template["metadata"]["labels"].items()
    pod = template["spec"]
    configmap, key = _config_source(pod)
    config = yaml.safe_load(named(objects, "ConfigMap", configmap)["data"][key])
    named(objects, "ServiceAccount", pod["serviceAccountName"])
    named(objects, "Secret", _webhook_secret(config, controller.default_secret))
    for kind, name in zip(("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"),
                          controller.webhook_configurations, strict=True):
        named(objects, kind, name)
    assert all(not a.startswith("--config") for a in _pod_args(pod))


def test_jobset_finds_its_certificates_where_its_chart_mounts_them(charts):
    # JobSet 0.12's cert rotator waits for the Secret's files in a fixed folder (pkg/util/cert/cert.go), where
    # the chart mounts the Secret; the harness mounts its copy at the Deployment's path.
    jobset = JOBSET_CONTROLLER
    objects = released(jobset)
    pod = named(objects, "Deployment", jobset.deployment)["spec"]["template"]["spec"]
    configmap, key = _config_source(pod)
    config = yaml.safe_load(named(objects, "ConfigMap", configmap)["data"][key])
    assert _secret_mount_path(pod, _webhook_secret(config, jobset.default_secret)) == JOBSET_CERT_DIR
    assert config["internalCertManagement"]["enable"] is True


def _argv(workdir: Path, argv: list[str], mounts: dict[str, Path]) -> list[str]:
    # netns_argv reads only these of the cluster: no cluster (root, a network namespace) needed.
    fake = SimpleNamespace(workdir=workdir, netns="mlp-e2e-test", hosts_file=workdir / "hosts")
    return LoopbackCluster.netns_argv(fake, argv, mounts)  # pyright: ignore[reportArgumentType]


def test_a_process_gets_its_certificates_at_a_fixed_path_in_a_tmp_of_its_own():
    work = Path("/var/lib/e2e-run")
    argv = _argv(work, ["/opt/bin/jobset", "--config=/var/lib/e2e-run/jobset/config.yaml"],
                 {JOBSET_CERT_DIR: work / "jobset" / "certs"})
    script = argv[argv.index("-c") + 1]
    assert script == ('mount --bind "$0" /etc/hosts && mount -t tmpfs -o mode=1777,size=16m mlplatform-e2e /tmp && '
                      f'mkdir -p {JOBSET_CERT_DIR} && mount --bind /var/lib/e2e-run/jobset/certs {JOBSET_CERT_DIR} '
                      '&& exec "$@"')
    assert argv[-2:] == ["/opt/bin/jobset", "--config=/var/lib/e2e-run/jobset/config.yaml"]
    # Without mounts, the machine's /tmp stays (what every other process of the cluster sees).
    plain = _argv(work, ["/opt/bin/kueue"], {})
    assert plain[plain.index("-c") + 1] == 'mount --bind "$0" /etc/hosts && exec "$@"'


@pytest.mark.parametrize("workdir,mounts", [
    (Path("/tmp/e2e-run"), {JOBSET_CERT_DIR: Path("/tmp/e2e-run/jobset/certs")}),  # hidden by the tmpfs
    (Path("/var/lib/e2e-run"), {"/etc/certs": Path("/var/lib/e2e-run/certs")}),  # not under /tmp
])
def test_a_mount_the_tmpfs_would_hide_or_that_is_not_under_tmp_is_refused(workdir, mounts):
    with pytest.raises(ClusterError):
        _argv(workdir, ["/opt/bin/jobset"], mounts)
