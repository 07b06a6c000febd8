"""JobSet: installed on every platform stack, placed and sized like Kueue, its webhooks scoped to team namespaces,
queued by Kueue, and torn down after the team namespaces whose JobSets it serves."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from components.jobset import WEBHOOKS
from components.queues import KUEUE_FRAMEWORKS, TEAM_NAMESPACES
from synth.applied import applied_objects
from synth.engine import Synthesis
from synth.render import stack_rendering, stack_synthesis
from tests.chart_values import chart_values, unknown_keys
from tests.conftest import PLATFORM_STACKS
from versions import JOBSET, JOBSET_IMAGE_TAG

JOBSET_CHART = f"charts/jobset-{JOBSET.version}"


def jobset_release(synthesis: Synthesis) -> Any:
    (release,) = [r for r in synthesis.releases() if r.inputs["name"] == "jobset"]
    return release


def rendered(stack: str, kind: str) -> list[dict[str, Any]]:
    """The JobSet release's objects of `kind` as applied: rendered by Helm, with the stack's patches."""
    objects = applied_objects(stack_synthesis(stack), stack_rendering(stack))
    return [o for o in objects if o.get("kind") == kind
            and (o["metadata"].get("annotations") or {}).get("mlplatform.io/helm-chart") == f"jobset-{JOBSET.version}"]


@pytest.mark.parametrize("stack", PLATFORM_STACKS)
def test_every_platform_stack_installs_jobset_at_its_pin(stack):
    release = jobset_release(stack_synthesis(stack)).inputs
    assert (release["version"], release["namespace"]) == (JOBSET.version, "jobset-system")
    assert release["values"]["image"]["tag"] == JOBSET_IMAGE_TAG


def test_the_image_is_the_charts_app_version(upstream):
    assert yaml.safe_load((upstream / JOBSET_CHART / "Chart.yaml").read_text())["appVersion"] == JOBSET_IMAGE_TAG


def test_jobset_values_exist_in_its_chart(local_synth, upstream):
    values = jobset_release(local_synth).inputs["values"]
    assert unknown_keys(values, chart_values(upstream, JOBSET_CHART),
                        free_form={"controller.nodeSelector", "controller.affinity"}) == []


def test_the_controller_runs_on_the_system_pool_sized_and_survives_one_restart(local_synth, charts):
    (deployment,) = rendered("local", "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 2
    assert pod["nodeSelector"] == {"mlplatform.io/pool": "system"}
    (container,) = pod["containers"]
    assert container["image"] == f"registry.k8s.io/jobset/jobset:{JOBSET_IMAGE_TAG}"
    assert container["resources"]["requests"] == {"cpu": "500m", "memory": "128Mi"}
    assert container["resources"]["limits"]["memory"] == "1Gi"
    (budget,) = rendered("local", "PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 1


@pytest.mark.parametrize("stack", PLATFORM_STACKS)
def test_jobset_webhooks_cover_team_namespaces_only(stack, charts):
    # The chart gives its webhooks no namespaceSelector (templates/webhook/manifests.yaml at 0.12.0): unscoped,
    # they fail closed for JobSets and their pods everywhere while the controller is down. The stack's patches
    # name every one of them, and no webhook the chart lacks (a patch naming one would add a broken webhook).
    configurations = [*rendered(stack, "MutatingWebhookConfiguration"),
                      *rendered(stack, "ValidatingWebhookConfiguration")]
    assert {c["metadata"]["name"]: tuple(w["name"] for w in c["webhooks"]) for c in configurations} == WEBHOOKS
    for configuration in configurations:
        for webhook in configuration["webhooks"]:
            assert webhook["namespaceSelector"] == TEAM_NAMESPACES, webhook["name"]
            assert webhook["clientConfig"]["service"]["name"] == "jobset-webhook-service"


def test_the_webhook_patches_come_after_the_release_and_take_the_defaulted_field(local_synth):
    release = jobset_release(local_synth)
    patches = [r for r in local_synth.resources if r.patch]
    assert len(patches) == 2 and all(release.urn in p.depends_on for p in patches)
    # The API server defaults namespaceSelector to {} when the release creates the configurations, and that
    # default belongs to the release's field manager: an unforced apply of ours would conflict (make e2e).
    assert all(p.inputs["metadata"]["annotations"] == {"pulumi.com/patchForce": "true"} for p in patches)


def test_kueue_queues_jobsets_as_one_workload():
    assert "jobset.x-k8s.io/jobset" in KUEUE_FRAMEWORKS


@pytest.mark.parametrize("stack", PLATFORM_STACKS)
def test_destroy_deletes_team_namespaces_before_the_jobset_controller(stack):
    # A team's JobSets are deleted with its namespace; Kueue updates them on the way (finalizers, suspension),
    # and the JobSet validating webhook judges every update: fail-closed, it needs its controller up until then.
    synthesis = stack_synthesis(stack)
    release = jobset_release(synthesis)
    teams = [r for r in synthesis.of_type("kubernetes:core/v1:Namespace")
             if "mlplatform.io/team" in (r.inputs["metadata"].get("labels") or {})]
    assert teams and all(release.urn in namespace.depends_on for namespace in teams)


def test_team_members_may_submit_jobsets_through_the_roles_aggregated_into_edit_and_view(local_synth):
    # The chart aggregates no role into `edit`: a team member's JobSet was Forbidden (found by make e2e).
    roles = {r.inputs["metadata"]["name"]: r.inputs
             for r in local_synth.of_type("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole")}
    edit, view = roles["mlplatform-jobsets-edit"], roles["mlplatform-jobsets-view"]
    assert edit["metadata"]["labels"] == {"rbac.authorization.k8s.io/aggregate-to-edit": "true"}
    assert view["metadata"]["labels"] == {"rbac.authorization.k8s.io/aggregate-to-view": "true"}
    (rule,) = edit["rules"]
    assert rule["apiGroups"] == ["jobset.x-k8s.io"] and rule["resources"] == ["jobsets"]
    assert {"create", "delete", "get", "list", "watch"} <= set(rule["verbs"])
    assert set(view["rules"][0]["verbs"]) == {"get", "list", "watch"}
