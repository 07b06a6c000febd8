"""The AMI releases and EKS add-on versions versions.py pins, confirmed in the stack's region at preview, before
any cloud work.

A release that was never published (a mistyped date, a minor it was not built for) would otherwise show only
after the control plane's 15 minutes: the system node group's creation fails, and Karpenter's EC2NodeClasses
stay unready with every GPU pod Pending. Each release of the EKS-optimized AL2023 AMI has one public SSM
parameter per minor, architecture and variant, which is how Karpenter resolves an `al2023@<version>` alias
(aws/karpenter-provider-aws v1.14.1, pkg/providers/amifamily/al2023.go, resolvePath). The lookup is by path,
which answers an empty list for a release that does not exist, rather than an error to tell from a denial.

An add-on version EKS does not publish for the cluster's minor fails the add-on's creation after the control
plane's 15 minutes too. The AWS provider's eks.getAddonVersion answers the newest version of an add-on for a
minor (DescribeAddonVersions, which lists only versions compatible with it); a pin newer than that is one EKS
does not offer there (a typo, a build not yet out, or one of another minor).
"""

from __future__ import annotations

import re

import pulumi
import pulumi_aws as aws

from clouds.eks.config import EksClusterConfig
from versions import EKS_ADDON_VERSIONS, EKS_AMI_ALIAS, EKS_SYSTEM_AMI_RELEASES


def ami_release_path(kubernetes_version: str, variant: str, release: str) -> str:
    """The SSM path under which an x86_64 AL2023 AMI release's parameters (image_id) are published."""
    return (f"/aws/service/eks/optimized-ami/{kubernetes_version}/amazon-linux-2023/x86_64/{variant}/"
            f"amazon-eks-node-al2023-x86_64-{variant}-{kubernetes_version}-{release}")


def pinned_ami_releases(spec: EksClusterConfig) -> dict[str, str]:
    """Each pin the cluster launches nodes from -> the SSM path of its release: the system pool's (node group and
    Karpenter overflow alike), and the GPU pools' alias (its NVIDIA variant, which Karpenter picks for them)."""
    minor = spec.kubernetes_version
    system = "v" + EKS_SYSTEM_AMI_RELEASES[minor].rsplit("-", 1)[1]
    pins = {f"EKS_SYSTEM_AMI_RELEASES[{minor!r}] ({EKS_SYSTEM_AMI_RELEASES[minor]})":
            ami_release_path(minor, "standard", system)}
    if spec.gpu_pools:
        pins[f"EKS_AMI_ALIAS ({EKS_AMI_ALIAS})"] = ami_release_path(minor, "nvidia", EKS_AMI_ALIAS.split("@", 1)[1])
    return pins


def confirm_ami_releases(spec: EksClusterConfig, invoke: pulumi.InvokeOptions) -> None:
    """Stop the preview, naming the pin in versions.py to change, when the region has no such AMI release."""
    missing = [f"{pin}, whose {path}/image_id is not there" for pin, path in pinned_ami_releases(spec).items()
               if not aws.ssm.get_parameters_by_path(path=path, opts=invoke).names]
    if missing:
        raise pulumi.RunError(
            f"versions.py pins AMI releases that {spec.region} does not publish for Kubernetes "
            f"{spec.kubernetes_version}: {'; '.join(missing)}. Change the pin to a release amazon-eks-ami's "
            "CHANGELOG lists for this minor")


def addon_version_key(version: str) -> tuple[int, ...]:
    """`v1.20.4-eksbuild.2` as (1, 20, 4, 2), in the order EKS publishes builds."""
    found = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)-eksbuild\.(\d+)", version)
    if found is None:
        raise ValueError(f"{version!r} is not an EKS add-on version (v<major>.<minor>.<patch>-eksbuild.<n>)")
    return tuple(int(part) for part in found.groups())


def confirm_addon_versions(spec: EksClusterConfig, invoke: pulumi.InvokeOptions) -> None:
    """Stop the preview, naming the pin to change, when an add-on's pinned version is newer than any EKS offers
    for the cluster's minor."""
    minor = spec.kubernetes_version
    unknown = []
    for addon, pinned in EKS_ADDON_VERSIONS[minor].items():
        newest = aws.eks.get_addon_version(addon_name=addon, kubernetes_version=minor, most_recent=True,
                                           opts=invoke).version
        if addon_version_key(pinned) > addon_version_key(newest):
            unknown.append(f"{addon} {pinned} (the newest EKS offers is {newest})")
    if unknown:
        raise pulumi.RunError(
            f"versions.py pins EKS add-on versions that {spec.region} does not offer for Kubernetes {minor}: "
            f"{'; '.join(unknown)}. Change EKS_ADDON_VERSIONS[{minor!r}] to versions that `aws eks "
            f"describe-addon-versions --kubernetes-version {minor} --addon-name <add-on>` lists")
