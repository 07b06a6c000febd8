"""The names of the cluster's two account-wide IAM roles, decided at preview, before any cloud work.

IAM names are unique per account, not per region: roles named from the cluster name alone collide when one
cluster name is used in two regions of an account, and the second stack's `up` fails at their creation. New
stacks name them per region. A stack made before `iamRoleNames` existed has roles of the older names that its
system node group and Karpenter's nodes run on; a new name replaces a role (and with it the node group), so the
preview stops and asks rather than guess whose roles the account's are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from clouds.eks.config import EksClusterConfig
from config.errors import PROJECT, stack_file


@dataclass(frozen=True)
class RoleNames:
    nodes: str  # the system node group's
    karpenter_nodes: str  # the nodes Karpenter launches


def role_names(spec: EksClusterConfig, scheme: str) -> RoleNames:
    prefix = spec.name if scheme == "cluster" else f"{spec.name}-{spec.region}"
    return RoleNames(nodes=f"{prefix}-node", karpenter_nodes=f"{prefix}-karpenter")


def decide_role_names(spec: EksClusterConfig, invoke: pulumi.InvokeOptions) -> RoleNames:
    if spec.iam_role_names is not None:
        return role_names(spec, spec.iam_role_names)
    older = role_names(spec, "cluster")
    found = aws.iam.get_roles(name_regex=f"^({re.escape(older.nodes)}|{re.escape(older.karpenter_nodes)})$",
                              opts=invoke).names
    if found:
        raise pulumi.RunError(
            f"The account already has the IAM role{'s' if len(found) > 1 else ''} {', '.join(sorted(found))}, "
            f"named from the cluster name alone as stacks made before `iamRoleNames` existed name them. If this "
            f"stack made them, set iamRoleNames: cluster under {PROJECT}:cluster in {stack_file(pulumi.get_stack())} to keep them (moving "
            f"to per-region names is two changes: docs/aws.md, \"IAM role names\"). If a stack in another region "
            f"made them, set it to regional: this stack's roles are then {role_names(spec, 'regional').nodes} "
            f"and {role_names(spec, 'regional').karpenter_nodes}.")
    return role_names(spec, "regional")
