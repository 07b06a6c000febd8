"""mlplatform's CrossGuard policy pack: `pulumi preview --policy-pack policies`. Constructing it serves it."""

from pulumi_policy import PolicyPack

from pack import policies

PolicyPack(name="mlplatform", policies=policies())
