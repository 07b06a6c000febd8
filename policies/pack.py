"""The CrossGuard policies: each rule of rules.py as a Pulumi policy, with preview's unknowns made explicit.

Building the policies starts nothing; only constructing the PolicyPack (in __main__.py) starts a server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import (
    UNKNOWN_ARCHIVE_VALUE,
    UNKNOWN_ARRAY_VALUE,
    UNKNOWN_ASSET_VALUE,
    UNKNOWN_BOOLEAN_VALUE,
    UNKNOWN_NUMBER_VALUE,
    UNKNOWN_OBJECT_VALUE,
    UNKNOWN_STRING_VALUE,
)

try:
    from policies import rules  # imported from the project: the tests and the offline synth
except ImportError:  # run by the Pulumi CLI from inside policies/
    import rules  # type: ignore[no-redef]

_UNKNOWNS = {UNKNOWN_ARCHIVE_VALUE, UNKNOWN_ARRAY_VALUE, UNKNOWN_ASSET_VALUE, UNKNOWN_BOOLEAN_VALUE,
             UNKNOWN_NUMBER_VALUE, UNKNOWN_OBJECT_VALUE, UNKNOWN_STRING_VALUE}
_LEVELS = {rules.MANDATORY: EnforcementLevel.MANDATORY, rules.ADVISORY: EnforcementLevel.ADVISORY}


def plain(value: Any) -> Any:
    """Inputs as the rules take them: the SDK's unknown-checking proxy unwrapped, unknowns as rules.UNKNOWN.

    The proxy raises on touching an unknown value, and the SDK then skips the whole policy for the
    resource; the rules would rather check everything that is known.
    """
    if isinstance(value, (Mapping, Sequence)) and not isinstance(value, (dict, list, str)):
        value = cast(Any, value)["__target"]  # the proxies hand out what they wrap under this key
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, str) and value in _UNKNOWNS:
        return rules.UNKNOWN
    return value


def stack_of(urn: str) -> str:
    return urn.removeprefix("urn:pulumi:").split("::", 1)[0]


def resource_policy(rule: rules.ResourceRule) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        for message in rule.check(args.resource_type, plain(args.props), stack_of(args.urn)):
            report_violation(message, None)

    return ResourceValidationPolicy(name=rule.name, description=rule.description,
                                    enforcement_level=_LEVELS[rule.enforcement], validate=validate)


def stack_policy(rule: rules.StackRule) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        resources = [rules.Resource(r.resource_type, r.urn, plain(r.props)) for r in args.resources]
        for urn, message in rule.check(resources):
            report_violation(message, urn)

    return StackValidationPolicy(name=rule.name, description=rule.description,
                                 enforcement_level=_LEVELS[rule.enforcement], validate=validate)


def policies() -> list[Policy]:
    return [*map(resource_policy, rules.RESOURCE_RULES), *map(stack_policy, rules.STACK_RULES)]
