"""mlplatform's CrossGuard policy pack: `pulumi preview --policy-pack policies`. Constructing it serves it."""

from pack import policies
from pulumi_policy import PolicyPack

PolicyPack(name="mlplatform", policies=policies())
