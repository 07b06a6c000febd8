"""Delivery: each stack's deployer can reach its Kubernetes API, placeholders never deploy, secrets survive CI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from pulumi.output import UNKNOWN

from clouds.eks.cluster import api_access_rules
from clouds.gke.cluster import GkeCluster, _dns_endpoint as gke_dns_endpoint, kubeconfig
from core.deployer import Deployer
from clouds.eks.config import EksClusterConfig
from config.errors import ConfigError
from clouds.gke.config import GkeClusterConfig
from synth import PROJECT_DIR, delivery
from tests.conftest import run_component

HOSTED = Deployer()
STATIC_EGRESS = Deployer.model_validate({"runner": "static-egress", "sourceCidrs": ["100.64.1.0/28"]})
IN_VPC = Deployer.model_validate({"runner": ["self-hosted", "ml"], "securityGroupIds": ["sg-00000000000000aa1"],
                                  "sourceCidrs": ["10.30.64.0/24"]})


def eks(**endpoint: Any) -> EksClusterConfig:
    return EksClusterConfig.model_validate({
        "cloud": "aws", "name": "ml", "region": "eu-west-1", "availabilityZones": ["eu-west-1a", "eu-west-1b"],
        "adminRoleArns": ["arn:aws:iam::210987654321:role/deployer"], "endpoint": endpoint})


def gke(**overrides: Any) -> GkeClusterConfig:
    return GkeClusterConfig.model_validate({
        "cloud": "gcp", "name": "ml", "project": "acme-ml-1", "projectNumber": "210987654321", "region": "europe-west4", "zones": ["europe-west4-a"],
        **overrides})


@pytest.mark.parametrize("cluster, deployer, reachable", [
    # EKS, public endpoint restricted to CIDRs: only a deployer whose egress is inside them.
    (eks(publicAccessCidrs=["100.64.1.0/24"]), HOSTED, False),
    (eks(publicAccessCidrs=["100.64.1.0/24"]), STATIC_EGRESS, True),
    (eks(publicAccessCidrs=["100.64.9.0/24"]), STATIC_EGRESS, False),
    (eks(publicAccessCidrs=["0.0.0.0/0"]), HOSTED, True),
    # EKS, private endpoint: a runner inside the network, admitted by security group or CIDR.
    (eks(), HOSTED, False),
    (eks(), IN_VPC, False),
    (eks(privateAccessSecurityGroupIds=["sg-00000000000000aa1"]), IN_VPC, True),
    (eks(privateAccessSecurityGroupIds=["sg-00000000000000bb2"]), IN_VPC, False),
    (eks(privateAccessCidrs=["10.30.0.0/16"]), IN_VPC, True),
    (eks(privateAccessCidrs=["10.30.0.0/16"]), STATIC_EGRESS, False),  # hosted: not inside the VPC
    # GKE: authorized networks admit named sources; the DNS endpoint admits any IAM-authorized caller.
    (gke(masterAuthorizedNetworks=[{"cidr": "100.64.1.0/24", "name": "ci"}]), HOSTED, False),
    (gke(masterAuthorizedNetworks=[{"cidr": "100.64.1.0/24", "name": "ci"}]), STATIC_EGRESS, True),
    (gke(masterAuthorizedNetworks=[{"cidr": "100.64.1.0/24", "name": "ci"}], dnsEndpoint=True), HOSTED, True),
])
def test_reachability_of_the_kubernetes_api_per_cloud(cluster, deployer, reachable):
    reason = cluster.unreachable_by(deployer)
    assert (reason is None) is reachable, reason
    if reason:
        assert "cannot reach the Kubernetes API of ml" in reason and "deployer." in reason


def project(tmp_path: Path, stacks: dict[str, dict[str, Any]]) -> Path:
    (tmp_path / "Pulumi.yaml").write_text((PROJECT_DIR / "Pulumi.yaml").read_text())
    for name, document in stacks.items():
        (tmp_path / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump(document))
    return tmp_path


def repo_stack(name: str) -> dict[str, Any]:
    return yaml.safe_load((PROJECT_DIR / f"Pulumi.{name}.yaml").read_text())


def test_the_synth_refuses_the_stacks_the_old_workflow_could_not_deploy(tmp_path):
    """As first written: dev's API open to a documentation CIDR, prod's private, both for a hosted runner."""
    dev, prod = repo_stack("dev"), repo_stack("prod")
    for document in (dev, prod):
        del document["config"]["mlplatform:deployer"]
    dev["config"]["mlplatform:cluster"]["endpoint"] = {"publicAccessCidrs": ["203.0.113.0/24"]}
    prod["config"]["mlplatform:cluster"]["endpoint"] = {"publicAccessCidrs": []}
    root = project(tmp_path, {"dev": dev, "prod": prod})
    for stack in ("dev", "prod"):
        with pytest.raises(ConfigError, match=rf"^Pulumi\.{stack}\.yaml: mlplatform:deployer: the deployer "
                                              r"\(runner ubuntu-24\.04, from addresses that change run to run\) "
                                              "cannot reach"):
            delivery.check(stack, root)


def test_make_synth_exits_2_naming_the_deployer_that_cannot_reach_the_api(tmp_path, monkeypatch, capsys):
    from synth import __main__ as cli

    dev = repo_stack("dev")
    del dev["config"]["mlplatform:deployer"]
    root = project(tmp_path, {"dev": dev})
    real_check = delivery.check
    monkeypatch.setattr(delivery, "check", lambda stack, project_dir: real_check(stack, root))
    assert cli.main(["dev", "--out", str(tmp_path / "out")]) == 2
    assert "error: Pulumi.dev.yaml: mlplatform:deployer: the deployer" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_a_team_stacks_deployer_must_reach_its_platforms_api(tmp_path):
    team = repo_stack("team-vision")
    del team["config"]["mlplatform:deployer"]
    root = project(tmp_path, {"dev": repo_stack("dev"), "team-vision": team})
    with pytest.raises(ConfigError, match="cannot reach the Kubernetes API of ml-dev"):
        delivery.check("team-vision", root)


def test_every_stack_in_the_repo_is_reachable_by_its_deployer():
    for stack in ("local", "dev", "prod", "gcp-dev", "team-vision"):
        delivery.check(stack)


def test_the_synth_warns_about_each_placeholder_and_the_deploy_refuses_naming_each(capsys):
    warnings = delivery.check("prod")
    assert warnings[0] == "5 documentation placeholder(s) to replace before a deploy:"
    assert warnings[1:] == [
        "Pulumi.prod.yaml: mlplatform:cluster.endpoint.privateAccessSecurityGroupIds[0]: sg-0123456789abcdef0 is "
        "an example AWS resource ID",
        "Pulumi.prod.yaml: mlplatform:cluster.adminRoleArns[0]: 111122223333 is an example AWS account ID from "
        "AWS's documentation",
        "Pulumi.prod.yaml: mlplatform:cluster.adminRoleArns[1]: 111122223333 is an example AWS account ID from "
        "AWS's documentation",
        "Pulumi.prod.yaml: mlplatform:cluster.adminRoleArns[2]: 111122223333 is an example AWS account ID from "
        "AWS's documentation",
        "Pulumi.prod.yaml: mlplatform:deployer.securityGroupIds[0]: sg-0123456789abcdef0 is an example AWS "
        "resource ID"]
    assert delivery.main(["deployable", "prod"]) == 1
    refusal = capsys.readouterr().err
    assert refusal.startswith("Pulumi.prod.yaml is not ready to deploy")
    assert all(warning in refusal for warning in warnings[1:])
    assert "no encryptedkey" in refusal


def test_placeholders_cover_documentation_networks_projects_and_domains():
    found = delivery.placeholders(delivery.read("gcp-dev"))
    assert any("secretsprovider: my-ml-platform-dev is an example Google Cloud project ID" in f for f in found)
    assert any("cluster.project: my-ml-platform-dev" in f for f in found)
    assert any("masterAuthorizedNetworks[0].cidr: 203.0.113.0/24 is a documentation address" in f for f in found)
    assert any("groups.edit[0]: example.com is an example domain" in f for f in found)
    assert any("198.51.100.16/28" in f for f in delivery.placeholders(delivery.read("dev")))


def test_a_stack_file_with_real_values_and_a_bootstrapped_key_deploys(tmp_path, capsys):
    text = yaml.safe_dump(repo_stack("dev")).replace("111122223333", "210987654322") \
        .replace("203.0.113.0/24", "100.64.0.0/24").replace("198.51.100.16/28", "100.64.1.0/28")
    root = project(tmp_path, {"dev": yaml.safe_load(text) | {"encryptedkey": "AQICAHh...ciphertext"}})
    assert delivery.main(["deployable", "dev"], root) == 0, capsys.readouterr().err
    assert delivery.main(["deployable", "dev"]) == 1  # the repo's own dev, with its placeholders


@pytest.mark.parametrize("document, problem", [
    ({"secretsprovider": "awskms://alias/x?region=eu-west-1"}, "has no encryptedkey"),
    ({}, "gets a new salt on every CI run"),
    ({"secretsprovider": "hashivault://x"}, "is not one CI can use"),
])
def test_secrets_that_ci_could_not_decrypt_the_same_way_each_run_are_refused(document, problem):
    (message,) = delivery.secrets_problems(delivery.StackFile("x", document))
    assert problem in message


def test_ci_operates_the_cloud_stacks_and_their_team_stacks_in_order():
    stacks = delivery.ci_stacks()
    assert [(s.stack, s.cloud, s.platform) for s in stacks] == [
        ("dev", "aws", ""), ("gcp-dev", "gcp", ""), ("prod", "aws", ""), ("team-vision", "aws", "dev")]
    runners = {s.stack: s.runner for s in stacks}
    assert runners["prod"][0] == "self-hosted" and runners["gcp-dev"] == ["ubuntu-24.04"]


def test_every_stack_file_names_a_secrets_provider_ci_can_use():
    ci = {s.stack for s in delivery.ci_stacks()}
    for stack in ("local", "dev", "prod", "gcp-dev", "team-vision"):
        provider = delivery.read(stack).secrets_provider
        assert "secretsprovider" in delivery.read(stack).document, stack
        if stack in ci:
            assert provider.startswith(delivery.CLOUD_SECRETS_PROVIDERS), (stack, provider)
        else:
            assert provider == "passphrase"  # a laptop stack, never in CI's backend
    assert delivery.read("gcp-dev").secrets_provider.startswith("gcpkms://")


# ---- what the clusters declare for it -------------------------------------------------------------------

def test_a_private_eks_endpoint_admits_https_from_the_named_groups_and_cidrs():
    spec = eks(privateAccessSecurityGroupIds=["sg-00000000000000aa1"], privateAccessCidrs=["10.99.0.0/24"])

    def build() -> None:
        api_access_rules("ml", spec, "sg-cluster", pulumi.ResourceOptions())

    synthesis = run_component(build)
    rules = synthesis.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    # Named by source: reordering the lists replaces nothing.
    assert {r.name for r in rules} == {"ml-api-from-sg-00000000000000aa1", "ml-api-from-10.99.0.0-24"}
    for rule in rules:
        assert rule.inputs["securityGroupId"] == "sg-cluster"
        assert (rule.inputs["ipProtocol"], rule.inputs["fromPort"], rule.inputs["toPort"]) == ("tcp", 443, 443)
    sources = {r.inputs.get("referencedSecurityGroupId") or r.inputs.get("cidrIpv4") for r in rules}
    assert sources == {"sg-00000000000000aa1", "10.99.0.0/24"}


def test_gke_dns_endpoint_is_on_and_the_ip_endpoint_stays_behind_authorized_networks():
    spec = gke(dnsEndpoint=True)

    def build() -> None:
        GkeCluster("ml", spec)

    (cluster,) = run_component(build).of_type("gcp:container/cluster:Cluster")
    assert cluster.inputs["controlPlaneEndpointsConfig"] == {"dnsEndpointConfig": {"allowExternalTraffic": True}}
    # No authorized network given: the IP endpoint admits none from the internet rather than all.
    assert cluster.inputs["masterAuthorizedNetworksConfig"] == {"cidrBlocks": []}


def test_a_dns_endpoint_kubeconfig_goes_through_it_and_trusts_the_public_ca():
    config = yaml.safe_load(kubeconfig("ml", "gke-0123abcd.europe-west4.gke.goog", None))
    assert config["clusters"][0]["cluster"] == {"server": "https://gke-0123abcd.europe-west4.gke.goog"}
    assert gke_dns_endpoint({"dns_endpoint_config": {"allow_external_traffic": True}}) is UNKNOWN  # a preview


# ---- the pull-request comment -----------------------------------------------------------------------------

def plan(pools: dict[str, int], teams: dict[str, int], resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resources": resources, "outputs": {
        "gpuCapacity": sum(pools.values()), "gpuPools": [{"name": n, "schedulableGpus": g} for n, g in pools.items()],
        "teams": {name: {"gpus": gpus} for name, gpus in teams.items()}}}


def resource(resource_name: str, type_: str = "aws:eks/cluster:Cluster", **inputs: Any) -> dict[str, Any]:
    return {"urn": f"urn:{type_}::{resource_name}", "type": type_, "name": resource_name, "parent": "p",
            "inputs": inputs}


def test_the_pull_request_comment_leads_with_replacements_deletions_capacity_quotas_charts_and_policies(
        monkeypatch):
    from synth import review

    helm = "kubernetes:helm.sh/v3:Release"
    before = plan({"l4": 8, "a10g": 4}, {"research": 6}, [
        resource("ml-cluster", name="ml"), resource("old-queue", type_="kueue:Queue"),
        resource("karpenter", type_=helm, chart="oci://x/karpenter", version="1.14.1")])
    after = plan({"l4": 8, "a10g": 8}, {"research": 8}, [
        resource("ml-cluster-2", name="ml"),
        resource("karpenter", type_=helm, chart="oci://x/karpenter", version="1.15.0")])
    deployment = {"kind": "Deployment", "metadata": {"namespace": "kube-system", "name": "karpenter"},
                  "spec": {"replicas": 2}}
    rendered = ({"karpenter/deployment": deployment},
                {"karpenter/deployment": deployment | {"spec": {"replicas": 3}}})
    checks = {"violations": ["[mandatory] rule: urn: broken"], "mandatory": 1, "advisory": 0, "broken": False}
    lines = review.stack_section("dev", before, after, rendered, checks)
    lead = lines[:lines.index(next(line for line in lines if line.startswith("<details>")))]
    # The chart bump's effect on what the release applies, folded below the lead.
    assert "<details><summary>Rendered by its Helm releases: 1 objects change</summary>" in lines
    assert any("update   karpenter: Deployment kube-system/karpenter" in line for line in lines)
    assert lead[:5] == ["### dev", "", "```diff", "- REPLACE aws:eks/cluster:Cluster ml-cluster -> ml-cluster-2",
                        "- DELETE  kueue:Queue old-queue"]
    assert "- GPU capacity: 12 -> 16 schedulable GPUs" in lead
    assert "- GPU pool a10g: 4 -> 8 GPUs" in lead
    assert "- team quota research: 6 -> 8 GPUs" in lead
    assert any(line.startswith("- chart of karpenter: oci://x/karpenter 1.14.1 -> oci://x/karpenter 1.15.0")
               for line in lead)
    assert "- policies: 1 mandatory and 0 advisory violations" in lead


def test_the_comment_reports_the_policy_results_of_the_new_code(tmp_path):
    from synth import pipeline, review
    from synth.diff import checks_in

    pipeline.run("local", out_dir=tmp_path / "local")
    assert review.policy_lines(checks_in(tmp_path / "local")) == ["policies: 0 mandatory and 0 advisory violations"]
    assert review.policy_lines({}) == ["policies: not checked (the synth wrote no results)"]


def test_a_team_stacks_section_says_when_the_pull_request_also_changes_its_platform(monkeypatch, tmp_path):
    from synth import review
    from synth.diff import Revisions

    def revisions(base: str, stacks: list[str], head: Path) -> Revisions:
        before, after = ({"dev": plan({"l4": capacity}, {}, []), "team-vision": plan({}, {}, [])}
                         for capacity in (12, 16))
        return Revisions(before, after, {}, {})

    monkeypatch.setattr(review, "synthesize_revisions", revisions)
    text = review.review("origin/main", [])
    team = text[text.index("### team-vision"):]
    assert team.splitlines()[2] == ("> Previewed against `dev` as deployed: this pull request also changes `dev`, "
                                    "which the team stack sees only once it is deployed.")
    assert "Previewed against" not in text[:text.index("### team-vision")]
    # Outputs alone changed (what team stacks read): the workflow's team previews learn it from the marker.
    assert delivery.changed_stacks(text) == ["dev"]
    assert delivery.changed_stacks("no marker") == []
