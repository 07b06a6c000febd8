"""Who runs `pulumi up` for a stack in CI: the GitHub Actions runner, and where its API requests come from.

The workflow runs each stack's preview and deploy on `runner`; the synth checks that a deployer coming from
`sourceCidrs` (or, inside an AWS network, from `securityGroupIds`) can reach the stack's Kubernetes API.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field

from core.fields import Cidr, Model, SecurityGroupId

# GitHub-hosted: its egress addresses change from run to run, so it reaches only an API open to anyone who
# authenticates (GKE's DNS endpoint) or to 0.0.0.0/0.
HOSTED_RUNNER = "ubuntu-24.04"

def _labels(value: object) -> object:
    # `runner: ubuntu-24.04` and `runner: [self-hosted, linux]` both mean what `runs-on:` means by them.
    return [value] if isinstance(value, str) else value


def _runner_labels(labels: list[str]) -> list[str]:
    for label in labels:
        if not label or label != label.strip() or "," in label:
            raise ValueError(f"{label!r} is not a runner label: give labels such as ubuntu-24.04 or "
                             "[self-hosted, linux, x64, ml-prod]")
    return labels


RunnerLabels = Annotated[list[str], BeforeValidator(_labels), Field(min_length=1), AfterValidator(_runner_labels)]


class Deployer(Model):
    """Whether and where CI previews and deploys this stack."""

    # CI previews and deploys this stack (opt-in): set it once the stack file holds no documentation
    # placeholders, its encrypted data key is committed and its runner exists. Until then CI only synthesizes it.
    operate: bool = False
    # The `runs-on` labels of the job that previews and deploys the stack.
    runner: RunnerLabels = [HOSTED_RUNNER]
    # The addresses its requests to the Kubernetes API come from, as the API sees them: the static egress of
    # a runner or its VPN, or its private addresses inside the cluster's network. Empty: unknown (hosted).
    source_cidrs: list[Cidr] = []
    # Inside an AWS network: the security groups of the runner's instances (EKS private endpoint access).
    security_group_ids: list[SecurityGroupId] = []

    @property
    def hosted(self) -> bool:
        return "self-hosted" not in self.runner

    def describe(self) -> str:
        origin = (f"from {', '.join(self.source_cidrs)}" if self.source_cidrs
                  else "from addresses that change run to run")
        groups = f" in security groups {', '.join(self.security_group_ids)}" if self.security_group_ids else ""
        return f"the deployer (runner {', '.join(self.runner)}, {origin}{groups})"
