"""What CI needs to preview and deploy each stack, and what would stop a real deploy.

- `python -m synth.delivery stacks`: the stacks CI operates, as JSON for the workflows (runner labels, cloud,
  platform stack), one line per GitHub Actions output.
- `python -m synth.delivery deployable <stack>`: exit 1, naming each, when the stack file still holds
  documentation placeholders or lacks a secrets provider CI can use; the deploy job runs it before `pulumi up`.
- `python -m synth.delivery changed <review>`: the stacks a pull request changes, as `make review` marks them.

The synth calls `check` on every stack: a deployer that cannot reach the stack's Kubernetes API is an error
(a deploy would time out after creating the cluster), placeholders are warnings (example stacks keep them).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from config.delivery import Deployer
from config.eks import EksClusterConfig
from config.errors import PROJECT, ConfigError, format_validation_error, stack_file
from config.gke import GkeClusterConfig
from config.models import ClusterConfig, PlatformConfig, TeamStackConfig
from synth import PROJECT_DIR
from synth.stackfile import available_stacks, load_yaml_file

# The clouds whose stacks CI deploys; kind and existing clusters live on someone's machine.
CI_CLOUDS = ("aws", "gcp")
# Secrets providers whose key CI reaches with the cloud credentials it already has.
CLOUD_SECRETS_PROVIDERS = ("awskms://", "gcpkms://")

# Documentation values (RFC 5737 and RFC 3849 addresses, AWS's example account and resource IDs, RFC 2606
# domains, example Google Cloud project IDs): fine in an example, never on a real cloud.
DOCUMENTATION_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"))
PLACEHOLDER_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?<!\d)(123456789012|111122223333|444455556666|777788889999)(?!\d)"),
     "an example AWS account ID from AWS's documentation"),
    (re.compile(r"\b((?:sg|subnet|vpc)-0123456789abcdef0)\b"), "an example AWS resource ID"),
    (re.compile(r"(?<=[@.])(example\.(?:com|org|net))\b"), "an example domain (RFC 2606)"),
    (re.compile(r"projects/((?:my|example)-[a-z0-9-]+)"), "an example Google Cloud project ID"),
)
EXAMPLE_PROJECT = re.compile(r"(?:my|example)-[a-z0-9-]+")
_ADDRESS = re.compile(r"(?<![\w.:])(\d{1,3}(?:\.\d{1,3}){3}(?:/\d{1,2})?|[0-9a-fA-F]{1,4}:[0-9a-fA-F:]*(?:/\d{1,3})?)")


@dataclass(frozen=True)
class StackFile:
    name: str
    document: dict[str, Any]

    @property
    def config(self) -> dict[str, Any]:
        """The project's keys without their namespace; secure values and other namespaces' keys (aws:region)
        left out, as the program reads them."""
        config = self.document.get("config") or {}
        return {key.removeprefix(f"{PROJECT}:"): value for key, value in config.items()
                if (key.startswith(f"{PROJECT}:") or ":" not in key)
                and not (isinstance(value, dict) and set(value) == {"secure"})}

    @property
    def secrets_provider(self) -> str:
        return str(self.document.get("secretsprovider", "passphrase"))


@dataclass(frozen=True)
class CiStack:
    stack: str
    runner: list[str]
    cloud: str
    # For a team stack, the platform stack it is deployed after (its short name); empty for a platform.
    platform: str = ""


def read(stack: str, project_dir: Path = PROJECT_DIR) -> StackFile:
    # Read as strictly as the synth reads it (duplicate keys, aliases, encodings): one reader for stack files.
    return StackFile(stack, load_yaml_file(project_dir / stack_file(stack)) or {})


def validated(file: StackFile) -> PlatformConfig | TeamStackConfig:
    model = TeamStackConfig if "platformStack" in file.config else PlatformConfig
    try:
        return model.model_validate(file.config)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, file.name, model)) from None


def _platform_of(config: TeamStackConfig, project_dir: Path) -> PlatformConfig:
    platform = validated(read(config.platform_stack_name, project_dir))
    assert isinstance(platform, PlatformConfig), "a team stack's platform stack is a platform stack"
    return platform


# ---- reaching the Kubernetes API ------------------------------------------------------------------------

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _inside(network: Network, block: Network) -> bool:
    if isinstance(network, ipaddress.IPv4Network) and isinstance(block, ipaddress.IPv4Network):
        return network.subnet_of(block)
    if isinstance(network, ipaddress.IPv6Network) and isinstance(block, ipaddress.IPv6Network):
        return network.subnet_of(block)
    return False


def _within(sources: list[str], blocks: list[str]) -> bool:
    """Every source network lies inside one of the blocks."""
    networks = [ipaddress.ip_network(b) for b in blocks]
    return all(any(_inside(source, block) for block in networks) for source in map(ipaddress.ip_network, sources))


def _describe(deployer: Deployer) -> str:
    origin = (f"from {', '.join(deployer.source_cidrs)}" if deployer.source_cidrs
              else "from addresses that change run to run")
    groups = f" in security groups {', '.join(deployer.security_group_ids)}" if deployer.security_group_ids else ""
    return f"the deployer (runner {', '.join(deployer.runner)}, {origin}{groups})"


def _eks(cluster: EksClusterConfig, deployer: Deployer) -> str | None:
    endpoint = cluster.endpoint
    # Unknown sources (a hosted runner) could be anywhere: only an endpoint open to the world admits them.
    sources = deployer.source_cidrs or ["0.0.0.0/0"]
    if endpoint.public and _within(sources, endpoint.public_access_cidrs):
        return None
    # The private endpoint resolves inside the VPC only, so it needs a runner there (or routed to it).
    inside = not deployer.hosted
    if inside and set(deployer.security_group_ids) & set(endpoint.private_access_security_group_ids):
        return None
    if inside and deployer.source_cidrs and _within(deployer.source_cidrs, endpoint.private_access_cidrs):
        return None
    admitted = (f"public to {', '.join(endpoint.public_access_cidrs)}" if endpoint.public else "not public")
    private = ", ".join([*endpoint.private_access_security_group_ids, *endpoint.private_access_cidrs]) or "nobody"
    return (f"{_describe(deployer)} cannot reach the Kubernetes API of {cluster.name}: its endpoint is "
            f"{admitted}, and inside the VPC admits {private}. Either run the deploy on a self-hosted runner in "
            "the network (deployer.runner with the self-hosted label) and name its security group in both "
            "cluster.endpoint.privateAccessSecurityGroupIds and deployer.securityGroupIds (or its subnet in "
            "cluster.endpoint.privateAccessCidrs and deployer.sourceCidrs), or give a runner with static "
            "egress addresses and list them in both cluster.endpoint.publicAccessCidrs and deployer.sourceCidrs")


def _gke(cluster: GkeClusterConfig, deployer: Deployer) -> str | None:
    authorized = [network.cidr for network in cluster.master_authorized_networks]
    # The DNS endpoint admits any caller Google's IAM lets in; without authorized networks the IP endpoint
    # admits anyone (and prod requires one of the two).
    if cluster.dns_endpoint or not authorized or _within(deployer.source_cidrs or ["0.0.0.0/0"], authorized):
        return None
    return (f"{_describe(deployer)} cannot reach the Kubernetes API of {cluster.name}: its control plane admits "
            f"only the authorized networks {', '.join(authorized)}. Set cluster.dnsEndpoint: true (reached by "
            "IAM, from any runner), or list the runner's static egress in both cluster.masterAuthorizedNetworks "
            "and deployer.sourceCidrs")


def unreachable(cluster: ClusterConfig, deployer: Deployer) -> str | None:
    """Why `deployer` cannot reach the cluster's Kubernetes API, or None when it can.

    kind and existing clusters are reached from the machine that has their kubeconfig; nothing to check.
    """
    if isinstance(cluster, EksClusterConfig):
        return _eks(cluster, deployer)
    if isinstance(cluster, GkeClusterConfig):
        return _gke(cluster, deployer)
    return None


# ---- placeholders ---------------------------------------------------------------------------------------

def _strings(value: Any, path: str) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [item for key, child in value.items()
                for item in _strings(child, f"{path}.{key}" if path else str(key))]
    if isinstance(value, list):
        return [item for index, child in enumerate(value) for item in _strings(child, f"{path}[{index}]")]
    return [(path, str(value))] if value is not None else []


def _documentation_address(text: str) -> bool:
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return any(_inside(network, doc) for doc in DOCUMENTATION_NETWORKS)


def placeholders(file: StackFile) -> list[str]:
    """Each documentation value in the stack file, with its key path and what it is."""
    found = []
    for path, text in _strings({k: v for k, v in file.document.items() if k != "config"}, "") + _strings(
            file.document.get("config") or {}, ""):
        for address in _ADDRESS.findall(text):
            if _documentation_address(address):
                found.append(f"{stack_file(file.name)}: {path}: {address} is a documentation address "
                             "(RFC 5737/3849)")
        if path.endswith(".project") and EXAMPLE_PROJECT.fullmatch(text):
            found.append(f"{stack_file(file.name)}: {path}: {text} is an example Google Cloud project ID")
        for pattern, what in PLACEHOLDER_PATTERNS:
            for match in pattern.finditer(text):
                found.append(f"{stack_file(file.name)}: {path}: {match.group(1)} is {what}")
    return found


# ---- secrets --------------------------------------------------------------------------------------------

def secrets_problems(file: StackFile) -> list[str]:
    """Why CI could not decrypt this stack's secrets the same way on every run (empty when it can)."""
    provider, where = file.secrets_provider, stack_file(file.name)
    if provider.startswith(CLOUD_SECRETS_PROVIDERS):
        if "encryptedkey" not in file.document:
            return [f"{where}: secretsprovider {provider} has no encryptedkey: create the stack once with "
                    f"`pulumi stack init organization/{PROJECT}/{file.name} --secrets-provider '{provider}'` and "
                    "commit the encryptedkey it writes, or every run would make a new data key"]
        return []
    if provider == "passphrase":
        if "encryptionsalt" not in file.document:
            return [f"{where}: a passphrase stack without encryptionsalt gets a new salt on every CI run, and "
                    "then cannot decrypt the secrets it stored: run `pulumi stack init --secrets-provider "
                    "passphrase` once and commit the encryptionsalt, or use awskms:// or gcpkms://"]
        return []
    return [f"{where}: secretsprovider {provider} is not one CI can use: use awskms://, gcpkms:// or passphrase"]


# ---- the stacks CI operates -----------------------------------------------------------------------------

def ci_stacks(project_dir: Path = PROJECT_DIR) -> list[CiStack]:
    """Platform stacks on a cloud, and the team stacks on them, in deploy order (platforms first)."""
    platforms: list[CiStack] = []
    teams: list[CiStack] = []
    for name in available_stacks(project_dir):
        config = validated(read(name, project_dir))
        if isinstance(config, PlatformConfig):
            if config.cluster.cloud in CI_CLOUDS:
                platforms.append(CiStack(name, config.deployer.runner, config.cluster.cloud))
        else:
            platform = _platform_of(config, project_dir)
            if platform.cluster.cloud in CI_CLOUDS:
                teams.append(CiStack(name, config.deployer.runner, platform.cluster.cloud,
                                     config.platform_stack_name))
    return platforms + teams


def check(stack: str, project_dir: Path = PROJECT_DIR) -> list[str]:
    """The synth's delivery check: ConfigError when the deployer cannot reach the API; placeholder warnings.

    A program given its config in-process (no stack file) has no deployer to check.
    """
    if not (project_dir / stack_file(stack)).is_file():
        return []
    file = read(stack, project_dir)
    config = validated(file)
    cluster = _platform_of(config, project_dir).cluster if isinstance(config, TeamStackConfig) else config.cluster
    if reason := unreachable(cluster, config.deployer):
        raise ConfigError(f"{stack_file(stack)}: {PROJECT}:deployer: {reason}.")
    found = placeholders(file)
    return [f"{len(found)} documentation placeholder(s) to replace before a deploy:", *found] if found else []


def changed_stacks(review: str) -> list[str]:
    """The stacks whose resources or outputs a pull request changes, as `make review` marks them."""
    match = re.search(r"^<!-- changed stacks: (\[.*\]) -->$", review, re.MULTILINE)
    return [str(stack) for stack in json.loads(match.group(1))] if match else []


def main(argv: list[str] | None = None, project_dir: Path = PROJECT_DIR) -> int:
    parser = argparse.ArgumentParser(prog="python -m synth.delivery", description=(__doc__ or '').splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("stacks", help="the stacks CI operates, as GitHub Actions outputs")
    deployable = commands.add_parser("deployable", help="refuse a stack that is not ready for a real deploy")
    deployable.add_argument("stack")
    changed = commands.add_parser("changed", help="the stacks a pull request changes (from make review)")
    changed.add_argument("preview", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "stacks":
            stacks = ci_stacks(project_dir)
            platforms = [{"stack": s.stack, "runner": s.runner, "cloud": s.cloud} for s in stacks if not s.platform]
            teams = [{"stack": s.stack, "runner": s.runner, "cloud": s.cloud, "platform": s.platform}
                     for s in stacks if s.platform]
            print(f"platforms={json.dumps(platforms)}")
            print(f"teams={json.dumps(teams)}")
            print(f"all={json.dumps(platforms + teams)}")
            print(f"runners={json.dumps({s.stack: s.runner for s in stacks})}")
            return 0
        if args.command == "changed":
            print(f"changed={json.dumps(changed_stacks(args.preview.read_text()))}")
            return 0
        file = read(args.stack, project_dir)
        check(args.stack, project_dir)
        problems = placeholders(file) + secrets_problems(file)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if problems:
        print(f"{stack_file(args.stack)} is not ready to deploy; replace or fix each of these first:",
              file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"{stack_file(args.stack)}: no placeholders, secrets provider {file.secrets_provider}, API reachable")
    return 0


if __name__ == "__main__":
    sys.exit(main())
