"""A real Kubernetes control plane on loopback, inside a network namespace of its own, for `make e2e`.

    tools = e2e.tools.build_all()                      # before the namespace exists: builds need the module proxy
    with LoopbackCluster(Path("out/e2e"), tools, nodes=[gpu_node("gpu-0", gpus=8)]) as cluster:
        cluster.run(["pulumi", "up", "--yes"])       # runs inside the namespace, KUBECONFIG set
        cluster.get("/api/v1/nodes")                  # the harness's own client, also inside the namespace

or, around one command: `python3 -m e2e.cluster [--workdir DIR] [--gpu-nodes N] -- COMMAND...`.

What runs: etcd, kube-apiserver, kube-controller-manager (every default controller: namespaces are really
deleted, garbage is really collected, service-account tokens and kube-root-ca.crt are really made),
kube-scheduler and kwok, which plays the kubelet of the fake nodes (nodes Ready, bound pods Running). Each is
started as `ip netns exec NAME ...` in a namespace that has only `lo`, so that whatever the API server dials
that is not on loopback (a Service's cluster IP behind a webhook or an APIService) fails at once instead of
leaving the machine. The harness's own requests go out from threads that entered the namespace (setns), so
they too reach only its loopback. Every process logs into WORKDIR/logs/; on exit all are stopped (TERM, then
KILL after a bound) and the namespace deleted, whatever happened before.

How this cluster differs from a real one:
  * No pod runs: kwok marks pods Running on the fake nodes, whose addresses are 127.0.0.1. Pod IPs (POD_CIDR)
    and cluster IPs (SERVICE_CIDR) are numbers that nothing answers; the `kubernetes` Service has no
    Endpoints (they may not hold a loopback address).
  * Job pods do not complete by themselves: kwok's default pod-complete stage would end them at once, while the
    GPU tests need pods that hold their quota. A pod completes when it carries COMPLETE_ANNOTATION: "true".
  * Webhooks are called by URL, not through a Service: every process sees WORKDIR/hosts bind-mounted over
    /etc/hosts (in the private mount namespace that `ip netns exec` makes for it; the machine's own file is
    never touched), which maps the names given to `add_hosts` to 127.0.0.1. A webhook configuration may then
    use `clientConfig.url: https://SVC.NS.svc:PORT/...`, and its certificate still names the Service.
  * The controller managers of the Kueue and JobSet charts run as processes beside the cluster; the harness
    copies each one's webhook Secret into its certificate folder, as the kubelet does for a Secret volume.
    Either `start_kueue` installs Kueue's CRDs and webhooks itself, or `emulate_controller_pods(KUEUE or
    JOBSET)` makes the chart's Deployment run its controller: it rewrites the chart's webhook and conversion
    clients to URLs in the live objects, starts the controller with the Deployment's args, ConfigMap and
    ServiceAccount, and marks the Deployment's pods Ready (kwok does not) only once it serves; it stops the
    controller when the Deployment is deleted or scaled to 0. One process stands for every replica. Kueue's
    visibility API is off, and the emulation removes the chart's two APIServices for it
    (v1beta1/v1beta2.visibility.kueue.x-k8s.io): nothing here can serve them, and while they exist unavailable
    the namespace controller's discovery fails and no namespace deletion finishes. JobSet serves on free ports
    (its defaults are Kueue's), without metrics, and finds its certificates where its chart mounts them under
    /tmp, in a /tmp of its own (`netns_argv`).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import http.client
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

import versions

T = TypeVar("T")

CONTROL_PLANE_TOOLS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
# Only numbers inside the namespace: no address in them is reachable from it, by design.
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
# What kwok manages: only the nodes annotated so (never a node of a real cluster by mistake).
KWOK_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
# A Job's pod with this annotation set to "true" completes once Running; other pods run until deleted.
COMPLETE_ANNOTATION = "mlplatform.e2e/complete"
FIELD_MANAGER = "mlplatform-e2e"
# The kwok stages `kwokctl` installs by default (kwok alone has none), read from the kwok module at its pin.
KWOK_STAGES = ("kustomize/stage/node/fast/node-initialize.yaml",
               "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
               "kustomize/stage/pod/fast/pod-ready.yaml",
               "kustomize/stage/pod/fast/pod-complete.yaml",
               "kustomize/stage/pod/fast/pod-delete.yaml")
NODE_LEASE_SECONDS = 40  # kwok renews the fake nodes' Leases, as a kubelet does (kwokctl's default)
STOP_GRACE_SECONDS = 10.0
WORKDIR_MARKER = ".mlplatform-e2e-cluster"  # a workdir is emptied at start only when it has this file
CLONE_NEWNET = 0x40000000


class ClusterError(RuntimeError):
    """The cluster could not be started or used; the message says what, and shows the log that tells why."""


class ProcessDied(ClusterError):
    """A process of the cluster has ended; the message has the end of its log."""


class BackgroundError(ClusterError):
    """A background thread of the harness (`emulate_controller_pods`) failed; the message says how."""


class ApiError(ClusterError):
    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        self.status = status
        self.body = body
        try:
            message = json.loads(body).get("message", body)
        except ValueError:
            message = body
        super().__init__(f"{method} {path}: HTTP {status}: {message}")


@dataclass(frozen=True)
class NodeSpec:
    """A fake node for kwok: its name, labels, taints (as in Node.spec.taints) and capacity (also allocatable)."""
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: Sequence[Mapping[str, str]] = ()
    capacity: Mapping[str, str] = field(
        default_factory=lambda: {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "500Gi"})

    def manifest(self) -> dict[str, Any]:
        labels = {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                  "type": "kwok", **self.labels}
        return {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": self.name, "labels": labels,
                         "annotations": {KWOK_NODE_ANNOTATION[0]: KWOK_NODE_ANNOTATION[1]}},
            "spec": {"taints": [dict(t) for t in self.taints]},
            # Nodes may be created with their status (kubelets register so); kwok keeps capacity and allocatable.
            "status": {"capacity": dict(self.capacity), "allocatable": dict(self.capacity),
                       "nodeInfo": {"kubeletVersion": versions.E2E_KUBERNETES, "architecture": "amd64",
                                    "operatingSystem": "linux"}},
        }


def gpu_node(name: str, gpus: int = 8, labels: Mapping[str, str] | None = None,
             taints: Sequence[Mapping[str, str]] = (), cpu: str = "96", memory: str = "1Ti") -> NodeSpec:
    """A fake GPU node: `nvidia.com/gpu: gpus` in its capacity, as the NVIDIA device plugin would advertise."""
    return NodeSpec(name, dict(labels or {}), taints,
                    {"cpu": cpu, "memory": memory, "pods": "110", "ephemeral-storage": "1Ti",
                     "nvidia.com/gpu": str(gpus)})


# --- processes -------------------------------------------------------------------------------------------------

@dataclass
class Process:
    """A process started inside the namespace, with its log file."""
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        """The last lines of the log, after its last few error lines (a usage dump can bury the one that counts)."""
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        errors = [line for line in text[:-lines] if _ERROR_LINE.search(line)][-5:]
        shown = [*errors, "..."] if errors else []
        return "\n".join([*shown, *text[-lines:]])

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """TERM the process's group, then KILL it when it has not ended within `grace` seconds."""
        if self.popen.poll() is None:
            _signal_group(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                _signal_group(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)


_ERROR_LINE = re.compile(r'^[EF]\d{4} |\b(error|Error|ERROR|fatal|panic)\b|"level":"(error|fatal)"')


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


# --- the network namespace, for the harness's own sockets ------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _enter_netns(path: str) -> None:
    """Move the calling thread (only it: a network namespace is per thread) into the namespace at `path`."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        # libc's setns(2): os.setns exists only from Python 3.12.
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _run_checked(argv: Sequence[str], what: str) -> str:
    done = subprocess.run(list(argv), capture_output=True, text=True)
    if done.returncode != 0:
        raise ClusterError(f"{what} failed: {' '.join(argv)}\n{(done.stderr or done.stdout).strip()}")
    return done.stdout


def module_dir(module: str, version: str) -> Path:
    """The folder of a Go module at `version` in the module cache (downloaded when missing, before the namespace)."""
    out = _run_checked(["go", "mod", "download", "-json", f"{module}@{version}"],
                       f"finding {module}@{version} in the Go module cache")
    info = json.loads(out)
    if info.get("Error") or not info.get("Dir"):
        raise ClusterError(f"{module}@{version}: {info.get('Error', 'no folder in the module cache')}")
    return Path(info["Dir"])


def has_condition(obj: Mapping[str, Any], kind: str, status: str = "True") -> bool:
    """Whether obj.status.conditions has a condition of type `kind` with `status`."""
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == kind and c.get("status") == status for c in conditions)


def _warning_text(header: str) -> str:
    """The text of a Warning header as the API server sends it: `299 - "text"` (RFC 7234, quotes escaped)."""
    match = re.fullmatch(r'\d{3} \S+ "((?:[^"\\]|\\.)*)"(?: .*)?', header.strip())
    return re.sub(r"\\(.)", r"\1", match.group(1)) if match else header


def _tool_version(name: str) -> tuple[str, str]:
    tool = next(t for t in versions.E2E_TOOLS if t.name == name)
    return tool.module, tool.version


def _load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


# --- the cluster -------------------------------------------------------------------------------------------------

class LoopbackCluster:
    """etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok in a network namespace of their own.

    `tools` maps each name in CONTROL_PLANE_TOOLS (and "kueue" and "jobset", for their charts' controllers) to
    its binary, as `e2e.tools.build_all()` returns them. `workdir` holds certificates, data, logs and the
    kubeconfig (`self.kubeconfig`); it is emptied at start. `netns` defaults to a name unique to this process.
    """

    def __init__(self, workdir: Path, tools: Mapping[str, Path], netns: str | None = None,
                 nodes: Sequence[NodeSpec] = (), *, start_timeout: float = 180.0) -> None:
        missing = [name for name in CONTROL_PLANE_TOOLS
                   if name not in tools or not os.access(tools[name], os.X_OK)]
        if missing:
            raise ClusterError(f"e2e tools missing: {', '.join(missing)}; build them with "
                               f"`python3 -m e2e.tools {' '.join(missing)}` (from the repository root)")
        for program in ("ip", "openssl", "mount"):
            if shutil.which(program) is None:
                raise ClusterError(f"`{program}` is not on PATH (Debian: iproute2, openssl, mount)")
        if os.geteuid() != 0:
            raise ClusterError("the e2e cluster needs root: it creates a network namespace (ip netns add)")
        self.workdir = Path(workdir).resolve()
        self.tools = {name: Path(path) for name, path in tools.items()}
        self.netns = netns or f"mlp-e2e-{os.getpid()}"
        self.nodes = list(nodes)
        self.start_timeout = start_timeout
        self.pki = self.workdir / "pki"
        self.logs = self.workdir / "logs"
        self.kubeconfig = self.workdir / "kubeconfig"
        self.hosts_file = self.workdir / "hosts"
        self.ports: dict[str, int] = {}
        self.server = ""
        self.timings: dict[str, float] = {}
        self._processes: list[Process] = []
        self._netns_created = False
        self._executor: ThreadPoolExecutor | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._hosts: set[str] = set()
        self._discovery: dict[str, dict[str, tuple[str, bool]]] = {}
        self._ssl: ssl.SSLContext | None = None
        self._lock = threading.RLock()  # around _processes and _background_errors, which threads change
        self._background_errors: list[str] = []
        self._secret_syncs: set[tuple[str, Path]] = set()

    # -- lifecycle --

    def __enter__(self) -> LoopbackCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        begin = time.monotonic()
        marker = self.workdir / WORKDIR_MARKER
        if self.workdir.exists() and any(self.workdir.iterdir()):
            if not marker.exists():
                raise ClusterError(f"{self.workdir} is not empty, and not the folder of an earlier e2e cluster "
                                   f"(no {WORKDIR_MARKER}): choose a new or empty folder")
            shutil.rmtree(self.workdir)
        for folder in (self.pki, self.logs, self.workdir / "etcd"):
            folder.mkdir(parents=True)
        marker.write_text("made by e2e/cluster.py; emptied when a cluster starts here again\n")
        self._create_netns()
        self._write_hosts()
        self.ports = dict(zip(("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler"),
                              self._free_ports(5)))
        self.server = f"https://127.0.0.1:{self.ports['apiserver']}"
        self._make_certificates()
        self._write_kubeconfig()
        self._start_etcd()
        self._start_apiserver()
        self._start_controller_manager()
        self._start_scheduler()
        self._start_kwok()
        # The default ServiceAccount proves the controller manager works (its serviceaccount controller made it).
        self.wait("the default ServiceAccount (kube-controller-manager working)",
                  lambda: self._exists("/api/v1/namespaces/default/serviceaccounts/default"))
        if self.nodes:
            self.add_nodes(self.nodes)
        self.timings["cluster start"] = time.monotonic() - begin

    def stop(self) -> None:
        """Stop every process (TERM, then KILL after a bound), then delete the namespace. Safe to call twice."""
        with self._lock:  # no thread starts a process after this
            self._stop.set()
            processes = list(self._processes)
        # Clients first, all at once; then the API server, then etcd, so that none logs the loss of another.
        storage = [p for p in processes if p.name in ("kube-apiserver", "etcd")]
        clients = [p for p in processes if p not in storage]
        for proc in clients:
            if proc.alive():
                _signal_group(proc.popen.pid, signal.SIGTERM)
        for proc in [*clients, *reversed(storage)]:
            proc.stop()
        self._processes.clear()
        for thread in self._threads:
            thread.join(5)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        if self._netns_created:
            done = subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, text=True)
            if done.returncode != 0:
                print(f"e2e cluster: deleting network namespace {self.netns} failed: {done.stderr.strip()}",
                      file=sys.stderr)
            self._netns_created = False

    # -- running things inside the namespace --

    def netns_argv(self, argv: Sequence[str | os.PathLike[str]],
                   mounts: Mapping[str, Path] | None = None) -> list[str]:
        """`argv` wrapped to run inside the namespace, with WORKDIR/hosts as its /etc/hosts.

        `ip netns exec` gives each command a private mount namespace, so the bind mount is its own and
        goes away with it; /etc/hosts on the machine is never touched. `mounts` maps folders under /tmp, as a
        pod's volume mounts would show them, to folders of this machine: the command then gets a /tmp of its
        own (an empty tmpfs) holding just those, for programs that read a fixed path there.
        """
        script = 'mount --bind "$0" /etc/hosts'
        if mounts:
            for target, source in mounts.items():
                for path in (Path(source), self.workdir, *(Path(a) for a in argv if os.path.isabs(a))):
                    if Path(path).resolve().is_relative_to("/tmp"):
                        raise ClusterError(f"{path} is under /tmp, which the process mounting {target} gets "
                                           "empty: use a work folder and tool cache elsewhere")
                if not Path(target).is_relative_to("/tmp") or ".." in Path(target).parts:
                    raise ClusterError(f"a process's mount {target}: only folders under /tmp are supported")
            script += " && mount -t tmpfs -o mode=1777,size=16m mlplatform-e2e /tmp"
            script += "".join(f" && mkdir -p {shlex.quote(t)} && mount --bind {shlex.quote(str(s))} {shlex.quote(t)}"
                              for t, s in sorted(mounts.items()))
        return ["ip", "netns", "exec", self.netns, "sh", "-c", script + ' && exec "$@"',
                str(self.hosts_file), *map(str, argv)]

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment for clients: this cluster's KUBECONFIG, and no proxy (nothing may leave loopback)."""
        env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
        env.update({"KUBECONFIG": str(self.kubeconfig), "NO_PROXY": "*"})
        env.update(extra or {})
        return env

    def run(self, argv: Sequence[str | os.PathLike[str]], *, env: Mapping[str, str] | None = None,
            check: bool = True, timeout: float | None = None, capture: bool = False,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run a client (pulumi, kubectl, pytest...) inside the namespace, with KUBECONFIG set, and wait for it.

        A process of the cluster that ends meanwhile (a controller the harness runs for a chart) ends the client
        at once with that process's error: `pulumi up` would otherwise wait out its whole bound for a Deployment
        that can no longer become ready."""
        pipe = subprocess.PIPE if capture else None
        popen = subprocess.Popen(self.netns_argv(argv), env=self.env(env), cwd=cwd, text=True, stdout=pipe,
                                 stderr=pipe, start_new_session=True)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                stdout, stderr = popen.communicate(timeout=1.0)  # retried after a timeout, no output is lost
                break
            except subprocess.TimeoutExpired:
                try:
                    self.check_processes()
                    if deadline is not None and time.monotonic() > deadline:
                        raise subprocess.TimeoutExpired(popen.args, timeout or 0.0) from None
                except BaseException:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(popen.pid, signal.SIGKILL)
                    popen.communicate()
                    raise
        done = subprocess.CompletedProcess(popen.args, popen.returncode, stdout, stderr)
        if check and done.returncode != 0:
            detail = f"\n{done.stderr.strip()[-4000:]}" if capture else ""
            raise ClusterError(f"{' '.join(map(str, argv))} exited {done.returncode} in namespace "
                               f"{self.netns}{detail}")
        return done

    def spawn(self, name: str, argv: Sequence[str | os.PathLike[str]],
              env: Mapping[str, str] | None = None, mounts: Mapping[str, Path] | None = None) -> Process:
        """Start a long-running process inside the namespace, logging to WORKDIR/logs/NAME.log; stopped on exit.
        `mounts`: as for `netns_argv`."""
        log = self.logs / f"{name}.log"
        with open(log, "ab") as out:
            popen = subprocess.Popen(self.netns_argv(argv, mounts), stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, env=self.env(env), start_new_session=True)
        proc = Process(name, popen, log)
        with self._lock:
            self._processes.append(proc)
        return proc

    def in_netns(self, fn: Callable[[], T], timeout: float = 60.0) -> T:
        """Call `fn` on a thread that is inside the namespace (its sockets reach the cluster's loopback)."""
        if self._executor is None:
            raise ClusterError("the cluster's network namespace does not exist (not started, or stopped)")
        return self._executor.submit(fn).result(timeout)

    def add_hosts(self, *names: str) -> None:
        """Resolve `names` to 127.0.0.1 for every process in the namespace, e.g. a webhook's SVC.NS.svc."""
        self._hosts.update(names)
        self._write_hosts()

    # -- waiting --

    def check_processes(self) -> None:
        """Raise, with the tail of its log, if a process of the cluster has ended; or what a background thread
        of the harness (`emulate_controller_pods`) failed with."""
        with self._lock:
            errors = list(self._background_errors)
            processes = list(self._processes)
        if errors:
            raise BackgroundError("; ".join(errors))
        for proc in processes:
            if not proc.alive():
                raise ProcessDied(f"{proc.name} exited with code {proc.popen.returncode}; the end of "
                                  f"{proc.log}:\n{proc.tail()}")

    def wait(self, what: str, probe: Callable[[], T | None], timeout: float | None = None,
             interval: float = 0.25) -> T:
        """Poll `probe` until it returns something other than None or False, with a deadline.

        An exception from the probe counts as "not yet" (it is shown if the deadline passes); a process of the
        cluster that has ended fails the wait at once.
        """
        deadline = time.monotonic() + (timeout if timeout is not None else self.start_timeout)
        last = ""
        while True:
            self.check_processes()
            try:
                value = probe()
                if value is not None and value is not False:
                    return value
            except (ProcessDied, BackgroundError):
                raise
            except ClusterError as exc:
                last = str(exc)
            except (OSError, ValueError, KeyError, http.client.HTTPException) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise ClusterError(f"timed out waiting for {what}" + (f"; last error: {last}" if last else ""))
            time.sleep(interval)

    # -- the API --

    def request(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
                timeout: float = 30.0) -> Any:
        """One request to the API server as the admin (group system:masters); the decoded JSON answer."""
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        url = self.server + path

        def call() -> Any:
            req = urllib.request.Request(url, data=data, method=method,
                                         headers={"Content-Type": content_type, "Accept": "application/json"})
            try:
                with urllib.request.urlopen(req, context=self._ssl, timeout=timeout) as resp:
                    raw = resp.read()
            except urllib.error.HTTPError as exc:
                raise ApiError(method, path, exc.code, exc.read().decode(errors="replace")) from None
            return json.loads(raw) if raw else None

        try:
            return self.in_netns(call, timeout + 5)
        except (ClusterError, OSError):
            # A failure that a dead component explains (a webhook server gone, say) is reported as that.
            self.check_processes()
            raise

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def path_of(self, obj: Mapping[str, Any], *, collection: bool = False) -> str:
        """The API path of an object (or of its collection), found by discovery."""
        api_version, kind = obj["apiVersion"], obj["kind"]
        plural, namespaced = self._resource(api_version, kind)
        prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        meta = obj.get("metadata", {})
        if namespaced:
            prefix += f"/namespaces/{meta.get('namespace') or 'default'}"
        path = f"{prefix}/{plural}"
        return path if collection else f"{path}/{meta['name']}"

    def create(self, obj: Mapping[str, Any]) -> Any:
        return self.request("POST", self.path_of(obj, collection=True), obj)

    def apply(self, obj: Mapping[str, Any], field_manager: str = FIELD_MANAGER) -> Any:
        """Server-side apply (creates or updates), forcing ownership of the fields given."""
        query = urllib.parse.urlencode({"fieldManager": field_manager, "force": "true"})
        return self.request("PATCH", f"{self.path_of(obj)}?{query}", obj,
                            content_type="application/apply-patch+yaml")

    def delete(self, obj: Mapping[str, Any]) -> Any:
        return self.request("DELETE", self.path_of(obj), {"propagationPolicy": "Background"})

    def request_as(self, method: str, path: str, body: Any = None, *, user: str, groups: Sequence[str] = (),
                   timeout: float = 30.0) -> tuple[Any, list[str]]:
        """`request` as USER in GROUPS (the admin impersonates them, so their RBAC applies), with the warnings
        the API server returned (a Warn admission policy's, Pod Security's warn level): what kubectl shows."""
        data = None if body is None else json.dumps(body).encode()
        address = urllib.parse.urlsplit(self.server)

        def call() -> tuple[Any, list[str]]:
            conn = http.client.HTTPSConnection(address.hostname or "127.0.0.1", address.port, context=self._ssl,
                                               timeout=timeout)
            try:
                # http.client, not urllib: one Impersonate-Group header per group, which a dict of headers cannot.
                conn.putrequest(method, path)
                for name, value in [("Content-Type", "application/json"), ("Accept", "application/json"),
                                    ("Impersonate-User", user), *(("Impersonate-Group", g) for g in groups),
                                    ("Content-Length", str(len(data or b"")))]:
                    conn.putheader(name, value)
                conn.endheaders(data)
                resp = conn.getresponse()
                raw, warnings = resp.read(), resp.headers.get_all("Warning") or []
            finally:
                conn.close()
            if resp.status >= 400:
                raise ApiError(method, path, resp.status, raw.decode(errors="replace"))
            return (json.loads(raw) if raw else None), [_warning_text(w) for w in warnings]

        return self.in_netns(call, timeout + 5)

    def _resource(self, api_version: str, kind: str) -> tuple[str, bool]:
        for refresh in (False, True):
            if refresh or api_version not in self._discovery:
                path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
                try:
                    listing = self.get(path)
                except ApiError as exc:
                    if exc.status != 404:
                        raise
                    listing = {"resources": []}
                self._discovery[api_version] = {r["kind"]: (r["name"], r["namespaced"])
                                                for r in listing["resources"] if "/" not in r["name"]}
            if kind in self._discovery[api_version]:
                return self._discovery[api_version][kind]
        raise ClusterError(f"the API server serves no {kind} in {api_version} (a CRD not installed yet?)")

    def _exists(self, path: str) -> bool:
        try:
            self.get(path)
            return True
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise

    # -- nodes --

    def add_nodes(self, specs: Iterable[NodeSpec], timeout: float = 60.0) -> None:
        """Create fake nodes for kwok and wait until each is Ready and schedulable (no not-ready taint)."""
        specs = list(specs)
        for spec in specs:
            self.create(spec.manifest())
        for spec in specs:
            self.wait(f"node {spec.name} Ready", lambda name=spec.name: self._node_ready(name), timeout)

    def _node_ready(self, name: str) -> bool:
        node = self.get(f"/api/v1/nodes/{name}")
        ready = has_condition(node, "Ready")
        # The node lifecycle controller removes its not-ready taints a little after Ready; until then the
        # scheduler would leave the node alone.
        tainted = any(t["key"].startswith("node.kubernetes.io/") for t in node["spec"].get("taints", []))
        return ready and not tainted

    # -- CRDs --

    def install_crds(self, crds: Iterable[Mapping[str, Any]], timeout: float = 60.0) -> None:
        """Apply CustomResourceDefinitions and wait until each is Established (its API served)."""
        crds = list(crds)
        for crd in crds:
            self.apply(crd)
        for crd in crds:
            name = crd["metadata"]["name"]
            path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
            self.wait(f"CRD {name} Established", lambda path=path: has_condition(self.get(path), "Established"),
                      timeout)
        self._discovery.clear()

    # -- internals: namespace, certificates, components --

    def _create_netns(self) -> None:
        if self.netns in _run_checked(["ip", "netns", "list"], "listing network namespaces").split():
            raise ClusterError(f"network namespace {self.netns} exists already (a cluster still running, or one "
                               f"that was not cleaned up: `ip netns pids {self.netns}` lists its processes, "
                               f"`ip netns del {self.netns}` removes it)")
        _run_checked(["ip", "netns", "add", self.netns], "creating the network namespace")
        self._netns_created = True
        _run_checked(["ip", "netns", "exec", self.netns, "ip", "link", "set", "lo", "up"], "bringing up lo")
        links = _run_checked(["ip", "netns", "exec", self.netns, "ip", "-o", "link"], "listing links")
        names = [line.split(":")[1].strip() for line in links.splitlines() if line.strip()]
        if names != ["lo"]:
            raise ClusterError(f"network namespace {self.netns} has interfaces {names}; it must have only lo")
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"netns-{self.netns}",
                                            initializer=_enter_netns, initargs=(f"/run/netns/{self.netns}",))

    def _write_hosts(self) -> None:
        # Written in place: a bind mount holds the inode, so processes already running see the new names.
        base = Path("/etc/hosts").read_text() if Path("/etc/hosts").exists() else "127.0.0.1 localhost\n"
        text = base + "".join(f"127.0.0.1 {name}\n" for name in sorted(self._hosts))
        mode = "r+" if self.hosts_file.exists() else "w"
        with open(self.hosts_file, mode) as out:
            out.seek(0)
            out.write(text)
            out.truncate()

    def _free_ports(self, count: int) -> list[int]:
        def pick() -> list[int]:
            socks = []
            try:
                for _ in range(count):
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    sock.bind(("127.0.0.1", 0))
                    socks.append(sock)
                return [s.getsockname()[1] for s in socks]
            finally:
                for sock in socks:
                    sock.close()
        return self.in_netns(pick)

    def _openssl(self, *args: str) -> None:
        _run_checked(["openssl", *args], "openssl")

    def _make_certificates(self) -> None:
        """A CA; the API server's serving cert; the admin's client cert (system:masters); the SA signing key."""
        p = self.pki
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        self._openssl("req", "-x509", *ec, "-keyout", f"{p}/ca.key", "-out", f"{p}/ca.crt", "-days", "7",
                      "-subj", "/CN=mlplatform-e2e-ca", "-addext", "basicConstraints=critical,CA:TRUE",
                      "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature")
        self._leaf("apiserver", "/CN=kube-apiserver", "serverAuth",
                   "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,"
                   "DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.96.0.1")
        self._leaf("admin", "/O=system:masters/CN=mlplatform-e2e-admin", "clientAuth", None)
        # The front proxy: the aggregator's client identity towards extension API servers. Without it the
        # controller manager and scheduler log, every few seconds, that the requestheader CA is missing.
        self._openssl("req", "-x509", *ec, "-keyout", f"{p}/front-proxy-ca.key", "-out", f"{p}/front-proxy-ca.crt",
                      "-days", "7", "-subj", "/CN=mlplatform-e2e-front-proxy-ca",
                      "-addext", "basicConstraints=critical,CA:TRUE",
                      "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature")
        self._leaf("front-proxy-client", "/CN=front-proxy-client", "clientAuth", None, ca="front-proxy-ca")
        self._openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{p}/sa.key")
        self._openssl("ec", "-in", f"{p}/sa.key", "-pubout", "-out", f"{p}/sa.pub")
        self._ssl = ssl.create_default_context(cafile=str(p / "ca.crt"))
        self._ssl.load_cert_chain(str(p / "admin.crt"), str(p / "admin.key"))

    def _leaf(self, name: str, subject: str, usage: str, san: str | None, ca: str = "ca") -> None:
        p = self.pki
        ext = p / f"{name}.ext"
        ext.write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                       f"extendedKeyUsage={usage}\n" + (f"subjectAltName={san}\n" if san else ""))
        self._openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                      "-keyout", f"{p}/{name}.key", "-out", f"{p}/{name}.csr", "-subj", subject)
        self._openssl("x509", "-req", "-in", f"{p}/{name}.csr", "-CA", f"{p}/{ca}.crt", "-CAkey", f"{p}/{ca}.key",
                      "-set_serial", f"0x{secrets.token_hex(15)}", "-days", "7", "-extfile", str(ext),
                      "-out", f"{p}/{name}.crt")

    def _write_kubeconfig(self, path: Path | None = None, user: Mapping[str, str] | None = None) -> Path:
        def b64(name: str) -> str:
            return base64.b64encode((self.pki / name).read_bytes()).decode()
        path = path or self.kubeconfig
        user = user or {"client-certificate-data": b64("admin.crt"), "client-key-data": b64("admin.key")}
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "e2e",
            "clusters": [{"name": "e2e", "cluster": {"server": self.server,
                                                     "certificate-authority-data": b64("ca.crt")}}],
            "users": [{"name": "user", "user": dict(user)}],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "user"}}],
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path

    def service_account_kubeconfig(self, namespace: str, name: str, hours: int = 24) -> Path:
        """A kubeconfig with a token of ServiceAccount NAMESPACE/NAME (TokenRequest), to act with its RBAC only."""
        token = self.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"expirationSeconds": hours * 3600}})["status"]["token"]
        return self._write_kubeconfig(self.workdir / f"kubeconfig-{namespace}-{name}", {"token": token})

    def _http_ok(self, url: str, verify: bool = False) -> bool:
        def call() -> bool:
            ctx = self._ssl if verify else ssl._create_unverified_context()  # noqa: S323 (self-signed, loopback)
            with urllib.request.urlopen(url, context=ctx if url.startswith("https") else None, timeout=5) as r:
                return r.status == 200
        try:
            return self.in_netns(call, 10)
        except urllib.error.HTTPError:
            return False

    def _timed(self, what: str, fn: Callable[[], object]) -> None:
        begin = time.monotonic()
        fn()
        self.timings[what] = time.monotonic() - begin

    def _start_etcd(self) -> None:
        client = f"http://127.0.0.1:{self.ports['etcd']}"
        peer = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        self.spawn("etcd", [self.tools["etcd"], "--name=e2e", f"--data-dir={self.workdir / 'etcd'}",
                            f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
                            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
                            f"--initial-cluster=e2e={peer}", "--initial-cluster-state=new",
                            # A throwaway cluster: durability is not worth an fsync per write.
                            "--unsafe-no-fsync", "--log-level=warn"])
        self._timed("etcd", lambda: self.wait("etcd /health", lambda: self._http_ok(f"{client}/health")))

    def _start_apiserver(self) -> None:
        p = self.pki
        self.spawn("kube-apiserver", [
            self.tools["kube-apiserver"],
            f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.ports['apiserver']}",
            f"--tls-cert-file={p}/apiserver.crt", f"--tls-private-key-file={p}/apiserver.key",
            f"--client-ca-file={p}/ca.crt",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={p}/sa.pub", f"--service-account-signing-key-file={p}/sa.key",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            f"--requestheader-client-ca-file={p}/front-proxy-ca.crt",
            "--requestheader-allowed-names=front-proxy-client", "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group", "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={p}/front-proxy-client.crt",
            f"--proxy-client-key-file={p}/front-proxy-client.key",
            # The `kubernetes` Service gets no Endpoints: they may not hold a loopback address (the reconciler
            # would fail every 10s), and nothing in this cluster runs in a pod to use them.
            "--endpoint-reconciler-type=none",
            # The default admission plugins (ValidatingAdmissionPolicy and the webhooks among them) stay on.
            "--allow-privileged=true", "--profiling=false", "--v=1",
        ])
        self._timed("kube-apiserver", lambda: self.wait(
            "kube-apiserver /readyz", lambda: self._http_ok(f"{self.server}/readyz", verify=True)))

    def _component_flags(self, name: str) -> list[str]:
        # Secure serving on loopback, for /healthz; delegated authn/authz through the admin kubeconfig.
        return [f"--kubeconfig={self.kubeconfig}", f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}", "--bind-address=127.0.0.1",
                f"--secure-port={self.ports[name]}", f"--cert-dir={self.workdir / name}", "--leader-elect=false",
                "--v=1"]

    def _start_controller_manager(self) -> None:
        p = self.pki
        self.spawn("kube-controller-manager", [
            self.tools["kube-controller-manager"], *self._component_flags("controller-manager"),
            "--controllers=*", "--use-service-account-credentials=true",
            f"--service-account-private-key-file={p}/sa.key", f"--root-ca-file={p}/ca.crt",
            f"--cluster-signing-cert-file={p}/ca.crt", f"--cluster-signing-key-file={p}/ca.key",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
        ])
        port = self.ports["controller-manager"]
        self._timed("kube-controller-manager", lambda: self.wait(
            "kube-controller-manager /healthz", lambda: self._http_ok(f"https://127.0.0.1:{port}/healthz")))

    def _start_scheduler(self) -> None:
        self.spawn("kube-scheduler", [self.tools["kube-scheduler"], *self._component_flags("scheduler")])
        port = self.ports["scheduler"]
        self._timed("kube-scheduler", lambda: self.wait(
            "kube-scheduler /healthz", lambda: self._http_ok(f"https://127.0.0.1:{port}/healthz")))

    def _kwok_stages(self) -> list[dict[str, Any]]:
        root = module_dir(*_tool_version("kwok"))
        stages = [doc for rel in KWOK_STAGES for doc in _load_yaml_docs(root / rel)]
        for stage in stages:
            if stage["metadata"]["name"] == "pod-complete":
                stage["spec"]["selector"]["matchExpressions"].append(
                    {"key": f'.metadata.annotations["{COMPLETE_ANNOTATION}"]', "operator": "In",
                     "values": ["true"]})
            if stage["metadata"]["name"] == "pod-ready":
                # The Kueue and JobSet charts' controller pods are made Ready by `emulate_controller_pods`, when
                # the controller serves (their readiness probe), never by kwok. A jq query: labels missing
                # make it "/".
                stage["spec"]["selector"]["matchExpressions"].extend(
                    {"key": " + \"/\" + ".join(f'.metadata.labels["{k}"]' for k in controller.pod_labels),
                     "operator": "NotIn", "values": ["/".join(controller.pod_labels.values())]}
                    for controller in CHART_CONTROLLERS)
        return stages

    def _start_kwok(self) -> None:
        config = self.workdir / "kwok.yaml"
        config.write_text(yaml.safe_dump_all(self._kwok_stages(), sort_keys=False))
        key, value = KWOK_NODE_ANNOTATION
        self.spawn("kwok", [
            self.tools["kwok"], f"--kubeconfig={self.kubeconfig}", f"--config={config}",
            "--manage-all-nodes=false", f"--manage-nodes-with-annotation-selector={key}={value}",
            # Node addresses on loopback: whatever the API server sends to a "kubelet" stays here.
            "--node-ip=127.0.0.1", f"--cidr={POD_CIDR}", f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
        ])

    # -- controller managers beside the cluster (Kueue, JobSet) --

    def start_kueue(self, config_yaml: str, *, crds: Sequence[Mapping[str, Any]],
                    webhooks: Sequence[Mapping[str, Any]], kubeconfig: Path | None = None,
                    timeout: float = 120.0) -> Process:
        """Run Kueue's controller manager beside the cluster, with its webhooks served on loopback.

        `config_yaml` is a Kueue Configuration (what the chart puts in ConfigMap kueue-manager-config). `crds`
        and `webhooks` are Kueue's CustomResourceDefinitions and webhook configurations as a chart renders
        them (or `kueue_manifests()`), with `clientConfig.service`; they are installed with
        `clientConfig.url: https://SVC.NS.svc:PORT/PATH` instead, SVC.NS.svc resolving to 127.0.0.1.

        Kueue's internal certificate management must stay on (the default): Kueue then makes its CA and
        serving certificate for SVC.NS.svc, keeps them in Secret NS/kueue-webhook-server-cert, and injects the
        CA into the webhook configurations and the CRDs' conversion webhooks, as in a real cluster. The
        harness plays the kubelet: it copies that Secret into Kueue's certDir.

        Kueue acts as the admin unless `kubeconfig` is given: `service_account_kubeconfig(NS, SA)` makes one
        for the chart's ServiceAccount, so that the chart's RBAC is what Kueue gets.

        Without the chart: to run the chart's own Deployment as Kueue, see `emulate_controller_pods(KUEUE)`.
        """
        begin = time.monotonic()
        setup = _kueue_setup(self, config_yaml, None)
        # What the chart creates before the manager runs: its namespace, the (empty) webhook Secret that the
        # cert rotator fills, the CRDs and the webhook configurations, whose CA the rotator injects.
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": setup.namespace}})
        self.apply({"apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": setup.secret, "namespace": setup.namespace}})
        self.install_crds(url_clients(crds, setup.host, setup.port))
        for obj in url_clients(webhooks, setup.host, setup.port):
            self.apply(obj)
        proc = self._launch_controller("kueue", setup, kubeconfig or self.kubeconfig)
        webhook_paths = [self.path_of(w) for w in webhooks]
        crd_paths = [f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{c['metadata']['name']}"
                     for c in crds if (c.get("spec", {}).get("conversion") or {}).get("strategy") == "Webhook"]
        self.wait("Kueue serving (/readyz, and its CA injected into its webhook configurations and CRDs)",
                  lambda: self._controller_serving(setup, webhook_paths, crd_paths), timeout)
        self.timings["kueue start"] = time.monotonic() - begin
        return proc

    def _launch_controller(self, name: str, setup: _ControllerSetup, kubeconfig: Path) -> Process:
        """Start the e2e tool NAME as its chart's pod would run it (not waiting for it), and the copying of its
        webhook Secret into its certificate folder."""
        if name not in self.tools:
            raise ClusterError(f"e2e tool {name} missing; build it with `python3 -m e2e.tools {name}`")
        setup.cert_dir.mkdir(parents=True, exist_ok=True)
        for stale in setup.cert_dir.iterdir():  # a fresh pod has only what its Secret holds now
            stale.unlink()
        config_path = self.workdir / name / "config.yaml"
        config_path.write_text(yaml.safe_dump(setup.config, sort_keys=False))
        self.add_hosts(setup.host)
        with self._lock:
            if self._stop.is_set():
                raise ClusterError("the cluster is stopping")
            proc = self.spawn(name, [self.tools[name], f"--config={config_path}", f"--kubeconfig={kubeconfig}",
                                     *setup.args], mounts=setup.mounts)
            self._sync_secret_to_dir(setup.namespace, setup.secret, setup.cert_dir)
        return proc

    def _controller_serving(self, setup: _ControllerSetup, webhook_paths: Iterable[str],
                            crd_paths: Iterable[str]) -> bool:
        """The controller's /readyz answers (its certificates made, mounted and its webhook server up), and its CA
        is in every webhook configuration and CRD conversion webhook named."""
        if not self._http_ok(f"http://127.0.0.1:{setup.health_port}/readyz"):
            return False
        for path in webhook_paths:
            if not all(w.get("clientConfig", {}).get("caBundle") for w in self.get(path).get("webhooks", [])):
                return False
        for path in crd_paths:
            conversion = self.get(path)["spec"].get("conversion") or {}
            if conversion.get("strategy") == "Webhook" and not conversion["webhook"]["clientConfig"].get("caBundle"):
                return False
        return True

    def _sync_secret_to_dir(self, namespace: str, name: str, folder: Path) -> None:
        """What the kubelet does for a Secret volume: keep tls.crt and tls.key of the Secret in `folder`. One
        thread per folder; it also writes again what a restarted controller's emptied folder lost."""
        path = f"/api/v1/namespaces/{namespace}/secrets/{name}"
        if (path, folder) in self._secret_syncs:
            return
        self._secret_syncs.add((path, folder))

        def loop() -> None:
            while not self._stop.wait(0.5):
                try:
                    data = self.get(path).get("data") or {}
                except (ClusterError, OSError, RuntimeError):
                    continue
                files = {key: base64.b64decode(data[key]) for key in ("tls.key", "tls.crt", "ca.crt")
                         if data.get(key)}
                # Only a filled pair: a chart's Secret starts with empty values (JobSet's has tls.crt: ""), which
                # a controller that finds the files reads as no PEM data and exits on, before its cert rotator
                # has filled the Secret. The key before the certificate, each replaced whole.
                if not ("tls.crt" in files and "tls.key" in files):
                    continue
                for key, content in files.items():
                    target = folder / key
                    with contextlib.suppress(OSError):
                        if target.read_bytes() == content:
                            continue
                    tmp = folder / f".{key}.tmp"
                    tmp.write_bytes(content)
                    tmp.chmod(0o600)
                    tmp.replace(target)  # atomic: the controller's cert watcher never reads half a file

        thread = threading.Thread(target=loop, name=f"cert-sync-{name}-{self.netns}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def emulate_controller_pods(self, controller: ChartController, *, timeout: float = 120.0,
                                interval: float = 0.5) -> ControllerPods:
        """Make a chart's controller-manager Deployment (`KUEUE`, `JOBSET`) run the real controller, as its pods
        would in a real cluster.

        Call it before the chart is installed (`pulumi up`, Helm): a background thread (stopped with the
        cluster) then, once the release's objects are there (the Deployment, the ConfigMap its `--config` file
        is mounted from, its ServiceAccount, its webhook Secret, the CRDs whose conversion webhooks it serves
        Established, and its webhook configurations):
          * rewrites in the live objects every `clientConfig.service` of those webhook configurations and of the
            CRDs' conversion webhooks to `url: https://SVC.NS.svc:PORT/PATH` (this cluster has no Service
            routing; SVC.NS.svc resolves to 127.0.0.1), each time before the controller starts and until it
            serves;
          * starts the real controller with the Deployment's container args, the ConfigMap's configuration
            (adapted by `controller.setup` to run out of a pod) and a token of the Deployment's ServiceAccount,
            so that the chart's RBAC is what it gets;
          * marks the Deployment's pods Running and Ready (kwok leaves them Pending: see `_kwok_stages`) only
            once its /readyz answers and its CA is in its webhook configurations and conversion webhooks, as the
            chart's readiness probe would; so the Deployment becomes Available, and Helm's wait ends, only when
            the controller serves its webhooks. Pods made later (a rollout) are marked so while it serves;
            when the ConfigMap changes, it is restarted with the new configuration before they are;
          * stops it when the Deployment is deleted (helm uninstall), is being deleted or is scaled to 0, as
            the kubelet would kill the pods; starts it again when the Deployment comes back.
        One process stands for all replicas. Returns the thread's state (`ControllerPods`), for tests. `timeout`
        bounds each step once the Deployment has appeared (the objects' arrival, the controller's start).
        Whatever fails in the thread is raised by `check_processes()`, and so by `wait()`.
        """
        if controller.tool not in self.tools:
            raise ClusterError(f"e2e tool {controller.tool} missing; build it with "
                               f"`python3 -m e2e.tools {controller.tool}`")
        emulator = ControllerPods(self, controller, timeout, interval)
        thread = threading.Thread(target=emulator.run, name=f"{controller.tool}-pods-{self.netns}", daemon=True)
        thread.start()
        self._threads.append(thread)
        return emulator

    def background_error(self, what: str) -> None:
        """Record a failure of a background thread; `check_processes()` (and so `wait()`) raises it."""
        with self._lock:
            self._background_errors.append(what)


@dataclass
class _ControllerSetup:
    """How the harness runs a controller manager out of a pod: its configuration file, its args besides --config
    and --kubeconfig, where it serves its webhooks (SVC.NS.svc and the server's own port) and health, the Secret
    its cert rotator fills and the folder the harness copies it into, and `mounts` (`netns_argv`)."""
    config: dict[str, Any]
    namespace: str
    host: str
    port: int
    secret: str
    cert_dir: Path
    health_port: int
    args: list[str] = field(default_factory=list)
    mounts: dict[str, Path] = field(default_factory=dict)


def _kueue_setup(cluster: LoopbackCluster, config_yaml: str, pod: Mapping[str, Any] | None) -> _ControllerSetup:
    """Kueue's Configuration as this harness runs it (out of a pod), and where it serves."""
    cfg = yaml.safe_load(config_yaml) or {}
    cert_mgmt = cfg.get("internalCertManagement") or {}
    if cert_mgmt.get("enable") is False:
        # Without it, Kueue 0.19 reads its metrics certificate from the fixed path /etc/kueue/metrics/certs
        # (cmd/kueue/main.go) and exits when that is missing; and the webhook certificates would be ours.
        raise ClusterError("the e2e Kueue needs internalCertManagement.enable (Kueue's default): with it off, "
                           "Kueue wants certificates at /etc/kueue/metrics/certs, which the harness does not "
                           "provide")
    namespace = cfg.get("namespace") or "kueue-system"
    service = cert_mgmt.get("webhookServiceName") or "kueue-webhook-service"
    port = int((cfg.get("webhook") or {}).get("port") or 9443)
    cert_dir = cluster.workdir / "kueue" / "certs"
    cfg.setdefault("webhook", {})["certDir"] = str(cert_dir)
    # In a pod, Kueue reads its namespace from the service-account mount; out of one, it must be told.
    cfg["namespace"] = namespace
    # Likewise the namespace of its leader-election Lease (leader election is on unless turned off).
    _lease_namespace(cfg, namespace)
    # The visibility API server is off: the aggregator reaches an APIService only through its Service's
    # cluster IP, which nothing in the namespace answers; and Kueue 0.19 writes its self-signed certificate
    # into the fixed folder /visibility (pkg/visibility/server.go), which would be on this machine's root.
    cfg.setdefault("featureGates", {})["VisibilityOnDemand"] = False
    health = (cfg.get("health") or {}).get("healthProbeBindAddress") or ":8081"
    return _ControllerSetup(config=cfg, namespace=namespace, host=f"{service}.{namespace}.svc", port=port,
                            secret=_webhook_secret(cfg, KUEUE.default_secret),
                            cert_dir=cert_dir, health_port=int(health.rsplit(":", 1)[1]),
                            args=_pod_args(pod))


# JobSet 0.12's defaults, which its cert rotator uses as they are (pkg/util/cert/cert.go): the namespace it assumes
# out of a pod (in one, the service-account mount's), and the folder it waits for the Secret's files in.
JOBSET_DEFAULT_NAMESPACE = "jobset-system"
JOBSET_CERT_DIR = "/tmp/k8s-webhook-server/serving-certs"


def _jobset_setup(cluster: LoopbackCluster, config_yaml: str, pod: Mapping[str, Any] | None) -> _ControllerSetup:
    """JobSet's Configuration (config.jobset.x-k8s.io/v1alpha1) as this harness runs it, and where it serves."""
    cfg = yaml.safe_load(config_yaml) or {}
    cert_mgmt = cfg.get("internalCertManagement") or {}
    if cert_mgmt.get("enable") is not True:
        raise ClusterError("the e2e JobSet needs internalCertManagement.enable (the chart's, without cert-manager): "
                           "its cert rotator makes the webhook certificates the harness copies to it")
    namespace = JOBSET_DEFAULT_NAMESPACE
    service = cert_mgmt.get("webhookServiceName") or "jobset-webhook-service"
    secret = _webhook_secret(cfg, JOBSET.default_secret)
    # Its webhook server's default port (9443) and probe address (:8081) are Kueue's too, in the same network
    # namespace: free ones instead. Its metrics server is off (its default port is Kueue's metrics port, and
    # nothing scrapes it here).
    port, health_port = cluster._free_ports(2)
    cfg.setdefault("webhook", {})["port"] = port
    cfg.setdefault("health", {})["healthProbeBindAddress"] = f"127.0.0.1:{health_port}"
    cfg.setdefault("metrics", {})["bindAddress"] = "0"
    _lease_namespace(cfg, namespace)
    # The rotator waits for the Secret's files in a fixed folder, where the chart mounts the Secret: the process
    # gets the harness's copy there (the Deployment's mount path, else the rotator's).
    cert_dir = cluster.workdir / "jobset" / "certs"
    mount_path = _secret_mount_path(pod, secret) or JOBSET_CERT_DIR
    return _ControllerSetup(config=cfg, namespace=namespace, host=f"{service}.{namespace}.svc", port=port,
                            secret=secret, cert_dir=cert_dir, health_port=health_port, args=_pod_args(pod),
                            mounts={mount_path: cert_dir})


def _webhook_secret(cfg: Mapping[str, Any], default: str) -> str:
    """The Secret a controller's cert rotator keeps its webhook certificates in, by its configuration."""
    return (cfg.get("internalCertManagement") or {}).get("webhookSecretName") or default


def _lease_namespace(cfg: dict[str, Any], namespace: str) -> None:
    """The namespace of the leader-election Lease, which a controller out of a pod cannot find by itself."""
    if (cfg.get("leaderElection") or {}).get("leaderElect") is not False:
        cfg["leaderElection"] = {**(cfg.get("leaderElection") or {})}
        cfg["leaderElection"].setdefault("resourceNamespace", namespace)


def _config_container(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    """The container of a controller's pod spec that reads its configuration (`--config=PATH`)."""
    for container in pod.get("containers") or []:
        if any(a.startswith("--config=") for a in container.get("args") or []):
            return container
    raise ClusterError(f"no container of the pod spec takes --config=: {[c.get('name') for c in pod['containers']]}")


def _pod_args(pod: Mapping[str, Any] | None) -> list[str]:
    """The chart's args of the controller, but --config (the harness writes its own file)."""
    if pod is None:
        return []
    return [a for a in _config_container(pod).get("args") or [] if not a.startswith("--config=")]


def _config_source(pod: Mapping[str, Any]) -> tuple[str, str]:
    """(ConfigMap, key) that a controller's `--config=PATH` file is mounted from, in its pod spec."""
    container = _config_container(pod)
    path = next(a.split("=", 1)[1] for a in container["args"] if a.startswith("--config="))
    for mount in container.get("volumeMounts") or []:
        if mount["mountPath"] == path and mount.get("subPath"):
            volume = next(v for v in pod.get("volumes") or [] if v["name"] == mount["name"])
            if "configMap" in volume:
                return volume["configMap"]["name"], mount["subPath"]
    raise ClusterError(f"--config={path}: no ConfigMap key is mounted there in the pod spec")


def _secret_mount_path(pod: Mapping[str, Any] | None, secret: str) -> str | None:
    """Where a controller's pod spec mounts Secret `secret`, if it does."""
    if pod is None:
        return None
    volumes = {v["name"] for v in pod.get("volumes") or [] if (v.get("secret") or {}).get("secretName") == secret}
    return next((m["mountPath"] for m in _config_container(pod).get("volumeMounts") or [] if m["name"] in volumes),
                None)


@dataclass(frozen=True)
class ChartController:
    """A chart's controller manager that `emulate_controller_pods` runs as a process beside the cluster, standing
    for its Deployment's pods: what tells its objects apart, and how it is run out of a pod (`setup`, from the
    configuration text and the Deployment's pod spec)."""
    tool: str  # its e2e tool, also its process's, log's and folder's name
    namespace: str
    deployment: str
    pod_labels: Mapping[str, str]  # its pods' labels: kwok's pod-ready stage leaves those pods to the harness
    webhook_configurations: tuple[str, ...]  # (validating, mutating) that it serves and injects its CA into
    setup: Callable[[LoopbackCluster, str, Mapping[str, Any] | None], _ControllerSetup]
    pod_ip_base: str  # the pod IPs its emulated pods get: a corner of POD_CIDR kwok never reaches
    default_secret: str  # its webhook Secret, unless its configuration's internalCertManagement names another
    converted_crds: tuple[str, ...] = ()  # CRDs whose conversion webhooks it serves and injects its CA into
    # APIServices it serves in a real cluster and nothing can serve here (the aggregator reaches one only through
    # its Service): left unavailable, they would fail the namespace controller's discovery, and no namespace
    # deletion would ever finish. Removed once the controller serves.
    unservable_apiservices: tuple[str, ...] = ()


KUEUE = ChartController(
    "kueue", "kueue-system", "kueue-controller-manager",
    # The labels of the Kueue chart's controller-manager pods (its kueue.selectorLabels, without the release's).
    {"app.kubernetes.io/name": "kueue", "control-plane": "controller-manager"},
    ("kueue-validating-webhook-configuration", "kueue-mutating-webhook-configuration"), _kueue_setup,
    "10.244.255.", "kueue-webhook-server-cert",
    # Kueue's CRDs whose conversion webhooks its cert rotator injects (pkg/util/cert/cert.go), and which the
    # chart (templates/crd) gives a conversion webhook by Service.
    tuple(f"{plural}.kueue.x-k8s.io"
          for plural in ("clusterqueues", "cohorts", "localqueues", "multikueueclusters", "workloads")),
    ("v1beta1.visibility.kueue.x-k8s.io", "v1beta2.visibility.kueue.x-k8s.io"))
# The JobSet chart's release as components/jobset.py installs it (RELEASE "jobset", so the chart names its objects
# jobset-controller, and its webhook configurations by the fixed names its cert rotator injects).
JOBSET = ChartController(
    "jobset", JOBSET_DEFAULT_NAMESPACE, "jobset-controller",
    {"app.kubernetes.io/name": "jobset", "app.kubernetes.io/component": "controller"},
    ("jobset-validating-webhook-configuration", "jobset-mutating-webhook-configuration"), _jobset_setup,
    "10.244.254.", "jobset-webhook-server-cert")
CHART_CONTROLLERS = (KUEUE, JOBSET)


class ControllerPods:
    """The thread behind `LoopbackCluster.emulate_controller_pods`: one poll loop, a state of what runs.

    For tests: `proc` (the controller's Process while one runs), `serving`, and `events`, (time.monotonic(),
    what) pairs: "TOOL started", "TOOL serving", "pod NAME ready", "rewrote NAME", "TOOL stopped (WHY)".
    """

    def __init__(self, cluster: LoopbackCluster, controller: ChartController, timeout: float,
                 interval: float) -> None:
        self.c = cluster
        self.controller = controller
        self.name = controller.tool
        self.namespace = controller.namespace
        self.timeout = timeout
        self.interval = interval
        self.deployment_path = f"/apis/apps/v1/namespaces/{self.namespace}/deployments/{controller.deployment}"
        admission = "/apis/admissionregistration.k8s.io/v1"
        validating, mutating = controller.webhook_configurations
        self.webhook_paths = [f"{admission}/validatingwebhookconfigurations/{validating}",
                              f"{admission}/mutatingwebhookconfigurations/{mutating}"]
        self.crd_paths = [f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
                          for name in controller.converted_crds]
        self.proc: Process | None = None
        self.setup: _ControllerSetup | None = None
        self.config_text: str | None = None
        self.serving = False
        self.started = 0.0
        self.selector = ""
        self.pod_ips: dict[str, str] = {}
        self.events: list[tuple[float, str]] = []  # (monotonic time, what): for tests and timings

    def note(self, what: str) -> None:
        self.events.append((time.monotonic(), what))

    def first(self, prefix: str) -> float | None:
        """When the first event starting with `prefix` happened (time.monotonic()), if it has."""
        return next((t for t, what in list(self.events) if what.startswith(prefix)), None)

    def run(self) -> None:
        failures: list[str] = []
        first_seen: float | None = None
        where = f"emulate_controller_pods({self.name})"
        while not self.c._stop.wait(self.interval):
            try:
                first_seen = self.step(first_seen)
                failures.clear()
            except ApiError as exc:
                # A conflict (the cert rotator wrote first) or an object going away mid-step: try again.
                if exc.status in (404, 409):
                    continue
                failures.append(str(exc))
            except (OSError, TimeoutError, http.client.HTTPException) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
            except ProcessDied as exc:
                if self.c._stop.is_set():
                    return
                self.c.background_error(f"{where}: {exc}")
                return
            except Exception as exc:  # noqa: BLE001 (anything else is a failure to report, not to retry)
                if self.c._stop.is_set():
                    return
                self.c.background_error(f"{where}: {type(exc).__name__}: {exc}")
                return
            if len(failures) * self.interval > self.timeout:
                self.c.background_error(f"{where}: failing for {self.timeout:.0f}s: {failures[-1]}")
                return
        self.stop_controller("cluster stopping")

    def get(self, path: str) -> Any | None:
        try:
            return self.c.get(path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def step(self, first_seen: float | None) -> float | None:
        dep = self.get(self.deployment_path)
        wanted = (dep is not None and not dep["metadata"].get("deletionTimestamp")
                  and (dep["spec"].get("replicas", 1) or 0) > 0)
        if dep is not None:
            labels = dep["spec"]["selector"].get("matchLabels") or {}
            self.selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        if not wanted:
            self.stop_controller("deployment deleted" if dep is None or dep["metadata"].get("deletionTimestamp")
                                 else "deployment scaled to 0")
            return None
        assert dep is not None
        pod = dep["spec"]["template"]["spec"]
        now = time.monotonic()
        first_seen = first_seen or now
        configmap, key = _config_source(pod)
        cm = self.get(f"/api/v1/namespaces/{self.namespace}/configmaps/{configmap}")
        config_text = ((cm or {}).get("data") or {}).get(key)
        if self.proc is not None and config_text is not None and config_text != self.config_text:
            self.stop_controller("configuration changed")  # a rollout's new pods run the new configuration
        if self.proc is None:
            missing = self.missing_objects(pod, configmap, key, config_text)
            if missing:
                if now - first_seen > self.timeout:
                    raise ClusterError(f"the {self.name} chart's objects did not all appear within "
                                       f"{self.timeout:.0f}s of its Deployment: missing {', '.join(missing)}")
                return first_seen
            assert config_text is not None
            self.start_controller(config_text, pod)
        assert self.setup is not None and self.proc is not None
        if not self.serving:
            self.rewrite_clients()  # until it serves: a CRD or webhook configuration may come late
            if not self.c._controller_serving(self.setup, self.webhook_paths, self.crd_paths):
                if now - self.started > self.timeout:
                    raise ClusterError(f"{self.name} (for the chart's Deployment) did not serve within "
                                       f"{self.timeout:.0f}s (readyz, CA injected); the end of {self.proc.log}:\n"
                                       f"{self.proc.tail()}")
                return first_seen
            self.serving = True
            self.note(f"{self.name} serving")
        self.drop_unservable_apiservices()
        self.mark_pods_ready()
        return first_seen

    def drop_unservable_apiservices(self) -> None:
        for name in self.controller.unservable_apiservices:
            path = f"/apis/apiregistration.k8s.io/v1/apiservices/{name}"
            if self.get(path) is not None:
                try:
                    self.c.request("DELETE", path)
                    self.note(f"removed APIService {name}")
                except ApiError as exc:
                    if exc.status != 404:
                        raise

    def missing_objects(self, pod: Mapping[str, Any], configmap: str, key: str,
                        config_text: str | None) -> list[str]:
        ns = self.namespace
        missing = [] if config_text is not None else [f"ConfigMap {configmap} (key {key})"]
        account = pod.get("serviceAccountName") or "default"
        paths = [(f"/api/v1/namespaces/{ns}/serviceaccounts/{account}", f"ServiceAccount {account}"),
                 *((p, p.rsplit("/", 1)[1]) for p in self.webhook_paths)]
        if config_text is not None:
            secret = _webhook_secret(yaml.safe_load(config_text) or {}, self.controller.default_secret)
            paths.append((f"/api/v1/namespaces/{ns}/secrets/{secret}", f"Secret {secret}"))
        for path, what in paths:
            if self.get(path) is None:
                missing.append(what)
        for path in self.crd_paths:
            crd = self.get(path)
            if crd is None or not has_condition(crd, "Established"):
                missing.append(f"CRD {path.rsplit('/', 1)[1]} (Established)")
        return missing

    def rewrite_clients(self) -> None:
        """Every `clientConfig.service` of the webhook configurations and conversion webhooks, made a URL."""
        assert self.setup is not None
        for path in [*self.webhook_paths, *self.crd_paths]:
            live = self.get(path)
            if live is None:
                continue
            rewritten = url_clients([live], self.setup.host, self.setup.port)[0]
            if rewritten == live:
                continue
            # A replace (with resourceVersion: a conflict is retried) takes `service` out whoever owns it.
            result = self.c.request("PUT", path, rewritten)
            left = [c for c in _client_configs(result) if "service" in c or "url" not in c]
            if left:
                raise ClusterError(f"{path}: clientConfig still not a URL after the rewrite: {left}")
            self.note(f"rewrote {path.rsplit('/', 1)[1]}")

    def start_controller(self, config_text: str, pod: Mapping[str, Any]) -> None:
        self.setup = self.controller.setup(self.c, config_text, pod)
        if self.setup.namespace != self.namespace:
            raise ClusterError(f"the chart's {self.name} configuration names namespace {self.setup.namespace}, "
                               f"its Deployment is in {self.namespace}")
        self.rewrite_clients()  # before the controller injects its CA into them
        kubeconfig = self.c.service_account_kubeconfig(self.namespace, pod.get("serviceAccountName") or "default")
        self.proc = self.c._launch_controller(self.name, self.setup, kubeconfig)
        self.config_text = config_text
        self.serving = False
        self.started = time.monotonic()
        self.note(f"{self.name} started")

    def stop_controller(self, why: str) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        self.serving = False
        with self.c._lock:
            if proc in self.c._processes:
                self.c._processes.remove(proc)
        proc.stop()
        self.note(f"{self.name} stopped ({why})")

    def mark_pods_ready(self) -> None:
        """What kwok's pod-ready stage does for other pods, for the bound, not yet Ready pods of the Deployment."""
        query = urllib.parse.urlencode({"labelSelector": self.selector})
        pods = self.c.get(f"/api/v1/namespaces/{self.namespace}/pods?{query}")["items"]
        for pod in pods:
            meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
            if meta.get("deletionTimestamp") or not spec.get("nodeName") or has_condition(pod, "Ready"):
                continue
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            ip = self.pod_ips.setdefault(meta["uid"],
                                         f"{self.controller.pod_ip_base}{len(self.pod_ips) % 254 + 1}")
            conditions = [{"type": kind, "status": "True", "lastTransitionTime": now}
                          for kind in ("Initialized", "Ready", "ContainersReady")]
            conditions += [{"type": gate["conditionType"], "status": "True", "lastTransitionTime": now}
                           for gate in spec.get("readinessGates") or []]
            patch = {"status": {
                "phase": "Running", "startTime": status.get("startTime") or now, "conditions": conditions,
                "containerStatuses": [{"name": c["name"], "image": c["image"], "imageID": "", "ready": True,
                                       "started": True, "restartCount": 0,
                                       "state": {"running": {"startedAt": now}}} for c in spec["containers"]],
                "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],  # the node's address, as kwok gives it
                "podIP": ip, "podIPs": [{"ip": ip}]}}
            # A strategic merge: conditions merge by type (PodScheduled stays).
            self.c.request("PATCH", f"/api/v1/namespaces/{self.namespace}/pods/{meta['name']}/status", patch,
                           content_type="application/strategic-merge-patch+json")
            self.note(f"pod {meta['name']} ready")


def _client_configs(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    configs = [w["clientConfig"] for w in obj.get("webhooks", [])]
    conversion = (obj.get("spec") or {}).get("conversion") or {}
    if conversion.get("strategy") == "Webhook":
        configs.append(conversion["webhook"]["clientConfig"])
    return configs


def url_clients(objs: Iterable[Mapping[str, Any]], host: str, port: int) -> list[dict[str, Any]]:
    """Webhook configurations and CRDs with each `clientConfig.service` replaced by `url: https://HOST:PORT/PATH`.

    PORT is the webhook server's own port: there is no Service in between to map 443 to it.
    """
    out = []
    for obj in objs:
        obj = json.loads(json.dumps(obj))  # a deep copy
        configs = [w["clientConfig"] for w in obj.get("webhooks", [])]
        conversion = obj.get("spec", {}).get("conversion", {})
        if conversion.get("strategy") == "Webhook":
            configs.append(conversion["webhook"]["clientConfig"])
        for client in configs:
            service = client.pop("service", None)
            if service is not None:
                client["url"] = f"https://{host}:{port}{service.get('path', '')}"
        out.append(obj)
    return out


def kueue_manifests(config_yaml: str = "") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Kueue's CRDs and webhook configurations at the pinned version, from its Go module, shaped as its chart has
    them: named kueue-*, the five conversion webhooks on, and the job-framework webhooks limited to the
    managed namespaces. A stand-in for the chart's rendering, for tests that do not render it."""
    root = module_dir(*_tool_version("kueue"))
    cfg = yaml.safe_load(config_yaml) or {}
    namespace = cfg.get("namespace") or "kueue-system"
    crds = [doc for path in sorted((root / "config/components/crd/bases").glob("*.yaml"))
            for doc in _load_yaml_docs(path)]
    # The conversion webhooks that Kueue's cert rotator injects its CA into (pkg/util/cert/cert.go).
    converted = {"localqueues", "clusterqueues", "workloads", "cohorts", "multikueueclusters"}
    for crd in crds:
        if crd["spec"]["names"]["plural"] in converted:
            crd["spec"]["conversion"] = {"strategy": "Webhook", "webhook": {
                "clientConfig": {"service": {"name": "kueue-webhook-service", "namespace": namespace,
                                             "path": "/convert"}},
                "conversionReviewVersions": ["v1"]}}
    webhooks = _load_yaml_docs(root / "config/components/webhook/manifests.yaml")
    selector = cfg.get("managedJobsNamespaceSelector") or {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", namespace]}]}
    frameworks = set(((cfg.get("integrations") or {}).get("frameworks")) or ["batch/job"])
    for obj in webhooks:
        obj["metadata"]["name"] = "kueue-" + obj["metadata"]["name"]
        for hook in obj["webhooks"]:
            hook["clientConfig"]["service"].update(name="kueue-webhook-service", namespace=namespace)
            groups = {g for rule in hook.get("rules", []) for g in rule.get("apiGroups", [])}
            if "kueue.x-k8s.io" not in groups:
                hook["namespaceSelector"] = selector
            # As the chart does: the pod, deployment and statefulset webhooks fail closed only when enabled.
            resources = {r for rule in hook.get("rules", []) for r in rule.get("resources", [])}
            for name, resource in (("pod", "pods"), ("deployment", "deployments"), ("statefulset", "statefulsets")):
                if resource in resources and name not in frameworks:
                    hook["failurePolicy"] = "Ignore"
    return crds, webhooks


def exit_on_sigterm() -> None:
    """Make SIGTERM raise SystemExit, so that `with LoopbackCluster(...)` stops the cluster on the way out
    (Python's default for SIGTERM is to die at once, leaving the processes and the namespace behind)."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


# --- command line: a cluster around one command -------------------------------------------------------------------

def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m e2e.cluster",
        description="Start a loopback cluster in a network namespace, run COMMAND inside it (KUBECONFIG set), "
                    "stop everything. Without COMMAND, keep the cluster until interrupted.")
    parser.add_argument("--workdir", type=Path, default=Path("out/e2e-cluster"))
    parser.add_argument("--gpu-nodes", type=int, default=1, help="fake nodes with nvidia.com/gpu: 8 each")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    from e2e import tools as e2e_tools  # noqa: PLC0415 (only the command line builds)

    exit_on_sigterm()
    built = e2e_tools.build_all(list(CONTROL_PLANE_TOOLS))
    nodes = [gpu_node(f"gpu-{i}") for i in range(args.gpu_nodes)]
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    with LoopbackCluster(args.workdir, built, nodes=nodes) as cluster:
        print(f"e2e cluster: up in {cluster.timings['cluster start']:.1f}s, namespace {cluster.netns}, "
              f"KUBECONFIG={cluster.kubeconfig}", file=sys.stderr, flush=True)
        if command:
            return cluster.run(command, check=False).returncode
        print("e2e cluster: run clients with `ip netns exec " + cluster.netns + " ...`; Ctrl-C stops",
              file=sys.stderr, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                cluster.check_processes()
                time.sleep(1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
