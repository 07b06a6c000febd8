"""Running a stack's real program in-process, with the Pulumi engine replaced by a recording stand-in.

The stand-in does what the engine does for a program and nothing more: it gives every resource a URN and a
deterministic ID and echoes its inputs back as its outputs. It never invents what a provider would
compute, and it answers no provider function call but who runs the program (the caller's identity and
partition, which a real preview learns from the credentials alone), the roles of an account as new as
AWS_ACCOUNT_ROLES says, and AWS's public parameters of the EKS AMI releases (published, but for
AWS_UNPUBLISHED_PATHS), so a program that depends on any other fails loudly here.
It runs the program as `pulumi preview` does: what only a provider can compute (a generated password, a
cluster's kubeconfig) stays unknown, and shows so in the output.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pulumi.output import Unknown
from pulumi.runtime import resource as sdk_resource, rpc
from pulumi.runtime.proto import source_pb2
from pulumi.runtime.config import set_all_config
from pulumi.runtime.mocks import MockCallArgs, MockEngine, MockMonitor, MockResourceArgs, Mocks, MockSettings
from pulumi.runtime.settings import ROOT, SETTINGS, configure
from pulumi.runtime.stack import run_in_stack
from pulumi.runtime.sync_await import _sync_await

from versions import EKS_ADDON_VERSIONS

SECRET = "[secret]"
UNKNOWN = "[unknown]"
STACK_TYPE = "pulumi:pulumi:Stack"
STACK_REFERENCE = "pulumi:pulumi:StackReference"


def _conceal(value: Any) -> Any:
    """A secret's shape without its contents, so that a redacted manifest stays a valid manifest."""
    if isinstance(value, dict):
        return {key: _conceal(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_conceal(item) for item in value]
    return SECRET


def redact(value: Any) -> Any:
    """Plain JSON-able data with every secret replaced by SECRET and every unknown by UNKNOWN."""
    if rpc.is_rpc_secret(value):
        return _conceal(rpc.unwrap_rpc_secret(value))
    if isinstance(value, Unknown):
        return UNKNOWN
    if isinstance(value, dict):
        return {key: redact(item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact(item) for item in value]
    # The wire format has only doubles; counts read better as the integers they were declared as.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _urn_of_reference(reference: str) -> str | None:
    # Provider references are "<urn>::<id>".
    return reference.rsplit("::", 1)[0] if reference else None


# What a preview shows of a secret that is not known yet: unknown (the SDK puts unknown before secret), or the
# secret marker once known. Never its plain text.
NOT_PLAIN = (SECRET, UNKNOWN)
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"


@dataclass(frozen=True)
class Resource:
    urn: str
    type: str
    name: str
    parent: str | None
    custom: bool
    provider: str | None
    protect: bool
    depends_on: tuple[str, ...]
    inputs: dict[str, Any]
    # Input paths a `pulumi up` leaves alone once the resource exists (the autoscaler's node counts).
    ignore_changes: tuple[str, ...] = ()

    @property
    def manifest(self) -> bool:
        """Whether the resource applies a Kubernetes object (not a provider, Helm release or component)."""
        return (self.custom and self.type.startswith("kubernetes:") and "apiVersion" in self.inputs
                and "kind" in self.inputs and not self.patch)

    @property
    def patch(self) -> bool:
        """Whether the resource is a server-side apply patch (a `...Patch` type): fields of an object that
        something else (a Helm release) creates, not an object of its own."""
        return self.custom and self.type.startswith("kubernetes:") and self.type.endswith("Patch")

    def as_plan_entry(self) -> dict[str, Any]:
        return {"urn": self.urn, "type": self.type, "name": self.name, "parent": self.parent,
                "custom": self.custom, "provider": self.provider, "protect": self.protect,
                "dependsOn": sorted(self.depends_on), "ignoreChanges": sorted(self.ignore_changes),
                "inputs": self.inputs}


@dataclass
class Synthesis:
    project: str
    stack: str
    resources: list[Resource]
    outputs: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    def of_type(self, type_: str) -> list[Resource]:
        return [r for r in self.resources if r.type == type_]

    def manifests(self) -> list[dict[str, Any]]:
        """Every Kubernetes object the stack applies itself, as it would be applied."""
        return [r.inputs for r in self.resources if r.manifest]

    def patches(self) -> list[dict[str, Any]]:
        """The fields the stack patches into objects it does not create itself."""
        return [r.inputs for r in self.resources if r.patch]

    def releases(self) -> list[Resource]:
        """Every Helm release the stack installs."""
        return self.of_type(HELM_RELEASE)

    def by_urn(self, urn: str) -> Resource:
        return next(r for r in self.resources if r.urn == urn)

    def children_of(self, urn: str) -> list[Resource]:
        return [r for r in self.resources if r.parent == urn]


# Who runs the offline synth, as a cloud's identity functions would see it: a CI session of the deploy role that
# docs/aws.md's setup creates (`mlplatform-deploy`), in the example stacks' account.
AWS_CALLER_ARN = "arn:aws:sts::111122223333:assumed-role/mlplatform-deploy/GitHubActions"
# The IAM roles of the synth's account that the program looks up (iam.getRoles): none, as in a new account.
AWS_ACCOUNT_ROLES: tuple[str, ...] = ()
# AWS's public SSM parameter paths under /aws/service/eks/ (EKS AMI releases) that the synth's region lacks: none,
# so the offline synth takes every pinned release as published (a real preview checks them).
AWS_UNPUBLISHED_PATHS: tuple[str, ...] = ()
# The newest EKS add-on versions (eks.getAddonVersion) the synth's region offers per (add-on, minor), where they
# differ from the pins: none, so the offline synth takes every pinned version as offered (a real preview checks).
AWS_NEWEST_ADDONS: dict[tuple[str, str], str] = {}
# AWS's partitions by the ARN prefix of their credentials (aws_partition in the AWS provider).
_AWS_PARTITIONS = {"aws": ("amazonaws.com", "com.amazonaws"), "aws-cn": ("amazonaws.com.cn", "cn.com.amazonaws"),
                   "aws-us-gov": ("amazonaws.com", "com.amazonaws")}


def aws_session_context(arn: str) -> dict[str, str]:
    """What iam.getSessionContext answers: for an assumed-role session, the role it is a session of; for any
    other principal, the principal itself. (AWS also looks up a role's path, which an ARN alone does not carry.)"""
    _, partition, service, _, account, resource = arn.split(":", 5)
    kind, _, rest = resource.partition("/")
    if service == "sts" and kind == "assumed-role":
        role, _, session = rest.rpartition("/")
        issuer = f"arn:{partition}:iam::{account}:role/{role}"
        return {"arn": arn, "id": arn, "issuerArn": issuer, "issuerId": f"AROA{account}", "issuerName": role,
                "sessionName": session}
    return {"arn": arn, "id": arn, "issuerArn": arn, "issuerId": "", "issuerName": "", "sessionName": ""}


def aws_roles(arns: tuple[str, ...], path_prefix: str | None, name_regex: str | None) -> dict[str, Any]:
    """What iam.getRoles answers: the roles whose path starts with the prefix and whose name matches."""
    found = []
    for arn in arns:
        path, _, name = ("/" + arn.split(":role/", 1)[1]).rpartition("/")
        if path.startswith((path_prefix or "/").rstrip("/")) and re.search(name_regex or "", name):
            found.append((arn, name))
    return {"id": "roles", "arns": [arn for arn, _ in found], "names": [name for _, name in found],
            "pathPrefix": path_prefix, "nameRegex": name_regex}


def _aws_identity(token: str, args: dict[str, Any], caller: str) -> dict[str, Any] | None:
    partition, account = caller.split(":")[1], caller.split(":")[4]
    if token == "aws:index/getCallerIdentity:getCallerIdentity":
        session = caller.rsplit("/", 1)[-1]
        return {"accountId": account, "arn": caller, "id": account, "userId": f"AROA{account}:{session}"}
    if token == "aws:iam/getSessionContext:getSessionContext":
        return aws_session_context(args["arn"])
    if token == "aws:iam/getRoles:getRoles":
        return aws_roles(AWS_ACCOUNT_ROLES, args.get("pathPrefix"), args.get("nameRegex"))
    if token == "aws:ssm/getParametersByPath:getParametersByPath" and args["path"].startswith("/aws/service/eks/"):
        path = args["path"]
        names = [] if path in AWS_UNPUBLISHED_PATHS else [f"{path}/image_id"]
        return {"id": path, "path": path, "names": names, "arns": [], "types": ["String"] * len(names),
                "values": ["ami-0123456789abcdef0"] * len(names), "withDecryption": True}
    if token == "aws:eks/getAddonVersion:getAddonVersion":
        addon, minor = args["addonName"], args["kubernetesVersion"]
        version = AWS_NEWEST_ADDONS.get((addon, minor)) or EKS_ADDON_VERSIONS[minor][addon]
        return {"id": addon, "addonName": addon, "kubernetesVersion": minor, "mostRecent": True, "version": version}
    if token == "aws:index/getPartition:getPartition":
        dns_suffix, reverse_dns = _AWS_PARTITIONS[partition]
        return {"id": partition, "partition": partition, "dnsSuffix": dns_suffix, "reverseDnsPrefix": reverse_dns}
    return None


class _EngineStandIn(Mocks):
    def __init__(self, stack_references: dict[str, dict[str, Any]]) -> None:
        self.stack_references = stack_references

    def new_resource(self, args: MockResourceArgs) -> tuple[str, dict]:
        if args.typ == STACK_REFERENCE:
            return self._stack_reference(args.resource_id or args.name)
        return (f"{args.name}-id" if args.custom else "", args.inputs)

    def _stack_reference(self, name: str) -> tuple[str, dict]:
        """A stack's outputs, as the engine reads them from the backend; only stacks synthesized here."""
        if name not in self.stack_references:
            raise RuntimeError(f"the offline synth has no outputs of the stack {name}: synthesize it first")
        outputs = self.stack_references[name]
        return name, {"name": name, "outputs": outputs,
                      "secretOutputNames": [key for key, value in outputs.items() if value == SECRET]}

    def call(self, args: MockCallArgs) -> tuple[dict, list | None]:
        # Only who runs the program, which a preview also learns from the credentials alone.
        if (identity := _aws_identity(args.token, dict(args.args), AWS_CALLER_ARN)) is not None:
            return identity, []
        raise RuntimeError(f"the offline synth cannot answer the provider function {args.token}: "
                           "give the program that value through stack config instead")


class RecordingMonitor(MockMonitor):
    def __init__(self, stack_references: dict[str, dict[str, Any]] | None = None) -> None:
        super().__init__(_EngineStandIn(stack_references or {}))
        self.recorded: list[Resource] = []
        self.stack_outputs: dict[str, Any] = {}
        self._stack_urn = ""
        self.thread_loops: list[asyncio.AbstractEventLoop] = []

    def _thread_loop(self) -> None:
        """Give the calling thread an event loop that run_program closes.

        The SDK calls the monitor from its executor's threads, and the mock monitor makes each such thread an
        event loop of its own (pulumi.runtime.sync_await._ensure_event_loop) that nothing ever closes.
        """
        try:
            asyncio.get_event_loop_policy().get_event_loop()
        except RuntimeError:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self.thread_loops.append(loop)

    def RegisterResource(self, request):  # noqa: N802 (the engine's gRPC method name)
        self._thread_loop()
        response = super().RegisterResource(request)
        if request.type == STACK_TYPE:
            self._stack_urn = response.urn
            return response
        self.recorded.append(Resource(
            urn=response.urn,
            type=request.type,
            name=request.name,
            parent=request.parent or None,
            custom=bool(request.custom),
            provider=_urn_of_reference(request.provider),
            protect=bool(request.protect),
            depends_on=tuple(sorted(set(request.dependencies))),
            inputs=redact(rpc.deserialize_properties(request.object, keep_unknowns=True)),
            ignore_changes=tuple(request.ignoreChanges),
        ))
        return response

    def ReadResource(self, request):  # noqa: N802
        self._thread_loop()
        response = super().ReadResource(request)
        self.recorded.append(Resource(
            urn=response.urn, type=request.type, name=request.name, parent=request.parent or None, custom=True,
            provider=_urn_of_reference(request.provider), protect=False,
            depends_on=tuple(sorted(set(request.dependencies))),
            inputs=redact(rpc.deserialize_properties(request.properties, keep_unknowns=True)),
        ))
        return response

    def RegisterResourceOutputs(self, request):  # noqa: N802
        if request.urn == self._stack_urn:
            self.stack_outputs = redact(rpc.deserialize_properties(request.outputs, keep_unknowns=True))
        return super().RegisterResourceOutputs(request)


async def _started(program: Callable[[], None]) -> None:
    """Run the program, then give each registration it queued one turn of the event loop to begin.

    Begun, they are RPCs, which the runtime then awaits one at a time; not yet begun, they are pending outputs,
    which it waits for all together, polling every one of them each time any finishes: a cost per resource that
    grew with the stack.
    """
    program()
    await asyncio.sleep(0)


class _WarningCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _close_loops(loop: asyncio.AbstractEventLoop, monitor: RecordingMonitor,
                 tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel what the program left pending (a failed run leaves Output tasks behind), stop the executor threads
    the SDK registers resources from, and close their event loops and the run's own.

    Left open, those loops are only collected while the interpreter shuts down, in whichever thread, and their
    __del__ then runs against half-torn-down modules: "Exception ignored in: <function BaseEventLoop.__del__>"
    after a run that succeeded.
    """
    # The run's own tasks, not asyncio.all_tasks(loop): that scans every task of the process still in memory,
    # and the runs before this one leave thousands in reference cycles until a full collection (a tenth of a
    # second per run in the tests, which synthesize hundreds of stacks in one process).
    pending = {task for task in list(tasks) if not task.done()}
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.run_until_complete(loop.shutdown_default_executor())
    for thread_loop in monitor.thread_loops:
        thread_loop.close()
    monitor.thread_loops.clear()
    loop.close()
    asyncio.set_event_loop(None)


def _recording_tasks(loop: asyncio.AbstractEventLoop) -> weakref.WeakSet[asyncio.Task[Any]]:
    """The tasks the loop creates from now on (by asyncio.ensure_future and create_task, all the SDK uses)."""
    created: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **options: Any) -> asyncio.Task[Any]:
        task = asyncio.Task(coro, loop=loop, **options)
        created.add(task)
        return task

    loop.set_task_factory(factory)
    return created


@contextmanager
def _no_stack_traces() -> Iterator[None]:
    """The SDK sends the engine the Python stack of every resource's registration (traceback.extract_stack, which
    reads each frame's source line): a tenth of the synth's time, for source positions the stand-in records
    nowhere. The stand-in gets an empty trace, as the SDK sends when it finds no user frame."""
    taken = sdk_resource._get_stack_trace
    sdk_resource._get_stack_trace = source_pb2.StackTrace
    try:
        yield
    finally:
        sdk_resource._get_stack_trace = taken


def run_program(program: Callable[[], None], *, project: str, stack: str, config: dict[str, str],
                secret_keys: list[str] | None = None, monitor: RecordingMonitor | None = None,
                stack_references: dict[str, dict[str, Any]] | None = None) -> Synthesis:
    """Run `program` as `pulumi up` would for this stack and config, and return what it registered.

    Pass a monitor to see what was registered even when the program fails, and the outputs of the stacks
    that the program reads by StackReference.
    """
    monitor = monitor or RecordingMonitor(stack_references)
    collector = _WarningCollector()
    logger = logging.getLogger(f"mlplatform.synth.{stack}")
    logger.propagate = False
    logger.handlers = [collector]

    # Each run starts from a clean runtime, so that one process can synthesize many stacks.
    ROOT.set(None)
    SETTINGS.outputs.clear()  # pyright: ignore[reportAttributeAccessIssue] (the SDK's untyped context property)
    configure(MockSettings(
        monitor=monitor,
        monitor_features=set(monitor.GetDeploymentInfo(None).supportedFeatures),
        engine=MockEngine(logger),
        project=project,
        stack=stack,
        dry_run=True,
        organization="organization",
        callbacks=None,
    ))
    set_all_config(dict(config), list(secret_keys or []))
    # The SDK awaits on the thread's current event loop; a loop of our own, closed after the run, leaves
    # nothing for the interpreter to finalize at exit (see _close_loops).
    loop = asyncio.new_event_loop()
    tasks = _recording_tasks(loop)
    asyncio.set_event_loop(loop)
    # Everything a program registers lives until it ends, so each of the cyclic collector's full passes walks a
    # larger heap than the last, and they come more often as it grows: with it on, the cost per resource grew
    # with the stack (docs/performance.md). Reference counting frees what the run discards as it goes; the few
    # cycles wait for the collector's next pass after the run.
    collecting = gc.isenabled()
    gc.disable()
    try:
        with _no_stack_traces():
            _sync_await(run_in_stack(lambda: _started(program)))
    finally:
        if collecting:
            gc.enable()
        _close_loops(loop, monitor, tasks)

    return Synthesis(project=project, stack=stack, resources=sorted(monitor.recorded, key=lambda r: r.urn),
                     outputs=monitor.stack_outputs, warnings=collector.messages)
