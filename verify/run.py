"""The checks of `make verify`, against an Api (a real API server, or recorded responses in the tests)."""

from __future__ import annotations

import re
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from components.gpu_rules import GPU_METRICS_JOB, gpu_alert_rules
from components.monitoring import RELEASE
from core.outputs import PlatformOutputs, PoolOutput
from core.progress import progress
from verify.api import Api, ApiError, Unreachable
from verify import nccl
from verify.nccl import INSTANCE_TYPE_LABEL, NCCL_NAMESPACE, AllReduceOutput, Floor
from verify.probe import NAMESPACE, gpu_pod, gpu_resource, namespace

# kube-prometheus-stack names Prometheus's service <release>-prometheus, on port 9090.
PROMETHEUS_SERVICE = f"{RELEASE}-prometheus:9090"
# What `nvidia-smi -L` prints per GPU it sees.
NVIDIA_SMI_GPU = re.compile(r"^GPU \d+: .+", re.MULTILINE)
# What the device plugin hands the container: the GPUs it allocated.
VISIBLE_DEVICES = re.compile(r"^NVIDIA_VISIBLE_DEVICES=(\S+)", re.MULTILINE)


def _time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _seconds(start: str, end: str | None) -> float | None:
    return (_time(end) - _time(start)).total_seconds() if end else None


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in obj.get("status", {}).get("conditions") or [] if c["type"] == kind
                 and c["status"] == "True"), None)


@dataclass
class PoolResult:
    pool: str
    pod: str = ""
    node: str = ""
    # The node came up for this pod (the pool scaled from what it had), rather than being there already.
    new_node: bool = False
    # From the pod's creation: its node Ready (new nodes only), the pod bound to it, the pod finished.
    scale_up_s: float | None = None
    scheduled_s: float | None = None
    finished_s: float | None = None
    gpu_seen: str = ""
    # From the pod's binding until the node's GPU metrics were in Prometheus.
    metrics_s: float | None = None
    skipped: str = ""
    # What this cluster cannot show (no pod runs: no GPU to see, no metrics), reported as such, never as passed.
    not_applicable: tuple[str, ...] = ()
    problems: list[str] = field(default_factory=list)
    done: bool = False
    metrics_since: float | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def _fmt(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.0f}s"


NOT_APPLICABLE = "NOT APPLICABLE (pods do not run on this cluster)"
# The columns a cluster whose pods do not run cannot fill.
NEEDS_RUNNING_PODS = ("finished", "GPU seen", "metrics")


NCCL_NOT_RUN = "NOT MEASURED (pods do not run on this cluster)"


@dataclass
class NcclResult:
    """One multi-node pool's two-node all-reduce."""

    pool: str
    job: str = ""
    nodes: list[str] = field(default_factory=list)
    instance_type: str = ""
    output: AllReduceOutput | None = None
    floor: Floor | None = None
    # Said instead of a bandwidth: why there is none (no pod runs here), or why it is not judged (no floor).
    not_measured: str = ""
    not_judged: str = ""
    problems: list[str] = field(default_factory=list)
    done: bool = False

    @property
    def ok(self) -> bool:
        """No problem. Unmeasured where pods do not run and unjudged where no floor applies are no failure, and
        are printed as what they are, never as passed."""
        return not self.problems

    def verdict(self) -> str:
        if self.problems:
            return "FAILED: " + "; ".join(self.problems)
        return self.not_measured or self.not_judged or "ok"


def _gbs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} GB/s"


def nccl_table(results: list[NcclResult]) -> list[str]:
    """Lines that each begin with NCCL, after the pools' table."""
    rows = [("NCCL", "nodes", "instance type", "network", "busbw", "floor", "result")]
    for r in results:
        busbw = r.output.avg_busbw if r.output else None
        floor = f"{r.floor.floor_gbs:.0f} GB/s" if r.floor else "-"
        rows.append((f"NCCL {r.pool}", ",".join(r.nodes) or "-", r.instance_type or "-",
                     (r.output.network if r.output else "") or "-", _gbs(busbw), floor, r.verdict()))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths)) + "  " + row[-1] for row in rows]


def table(results: list[PoolResult], rule_problems: list[str] | None,
          nccl_results: list[NcclResult] | None = None) -> str:
    """`rule_problems` None: the alert rules could not be judged here (no Prometheus runs)."""
    rows = [("pool", "node", "from zero", "scale-up", "scheduled", "finished", "GPU seen", "metrics", "result")]
    for r in results:
        verdict = "skipped: " + r.skipped if r.skipped else ("ok" if r.ok else "FAILED: " + "; ".join(r.problems))
        if r.not_applicable and not r.skipped:
            verdict += f"; {', '.join(r.not_applicable)}: {NOT_APPLICABLE}"
        cells = {"finished": _fmt(r.finished_s), "GPU seen": r.gpu_seen or "-", "metrics": _fmt(r.metrics_s)}
        cells |= {column: "n/a" for column in r.not_applicable}
        rows.append((r.pool, r.node or "-", "yes" if r.new_node else "no", _fmt(r.scale_up_s), _fmt(r.scheduled_s),
                     cells["finished"], cells["GPU seen"], cells["metrics"], verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths)) + "  " + row[-1] for row in rows]
    if nccl_results:
        lines += nccl_table(list(nccl_results))
    rules = (NOT_APPLICABLE + ": no Prometheus" if rule_problems is None
             else "all loaded, none firing" if not rule_problems else "; ".join(rule_problems))
    lines.append("alert rules: " + rules)
    return "\n".join(lines)


class Verifier:
    def __init__(self, api: Api, outputs: dict[str, Any], *, run_id: str, timeout: float = 1800,
                 metrics_timeout: float = 300, poll: float = 10, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, report: Callable[[str], None] = progress,
                 report_every: float = 60, namespace_timeout: float = 300,
                 ssh_keys: Callable[[], tuple[str, str]] = nccl.ssh_key_pair) -> None:
        self.api = api
        # The NCCL check's key pair, made per run (ssh-keygen; the tests pass their own).
        self.ssh_keys = ssh_keys
        self.nccl_results: list[NcclResult] = []
        self._nccl_namespace = False
        # How long a previous run's namespace may take to terminate before this run gives up.
        self.namespace_timeout = namespace_timeout
        self.outputs = outputs
        self.run_id = run_id
        self.timeout = timeout
        self.metrics_timeout = metrics_timeout
        self.poll = poll
        self.clock = clock
        self.sleep = sleep
        # Where the run is, at least every `report_every` seconds while it waits, and whenever a pool moves on.
        self.report = report
        self.report_every = report_every
        self.platform = PlatformOutputs.read(outputs)
        self.fake_gpus = self.platform.cloud == "kind"
        # Where no pod runs (make e2e's loopback cluster) the pod's placement is all there is to check.
        self.pods_run = self.platform.pods_run
        self.prometheus = (f"/api/v1/namespaces/{self.platform.monitoring_namespace}/services/{PROMETHEUS_SERVICE}"
                           "/proxy/api/v1")

    # ---- the steps ----

    def _start(self, pool: PoolOutput) -> PoolResult:
        result = PoolResult(pool.name)
        if gpu_resource(pool) is None:
            result.skipped = "mixed MIG advertises a resource per profile; request one of those to check it"
            result.done = True
            return result
        manifest = gpu_pod(pool, self.run_id)
        result.pod = manifest["metadata"]["name"]
        self.api.request("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", manifest)
        return result

    def _follow(self, pool: PoolOutput, result: PoolResult) -> None:
        pod = self.api.request("GET", f"/api/v1/namespaces/{NAMESPACE}/pods/{result.pod}")
        created = pod["metadata"]["creationTimestamp"]
        node_name = pod["spec"].get("nodeName")
        if node_name and not result.node:
            result.node = node_name
            scheduled = _condition(pod, "PodScheduled")
            result.scheduled_s = _seconds(created, scheduled["lastTransitionTime"] if scheduled else None)
            self._check_node(pool, result, created)
            result.metrics_since = self.clock()
            if not self.pods_run:
                result.not_applicable = NEEDS_RUNNING_PODS
                result.done = True
                return
        if result.node and result.metrics_s is None and result.metrics_since is not None:
            self._check_metrics(result)
        phase = pod.get("status", {}).get("phase")
        if phase == "Succeeded":
            terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
            result.finished_s = _seconds(created, terminated["finishedAt"])
            self._check_log(result)
        elif phase == "Failed":
            result.problems.append(f"the pod failed: {pod['status'].get('reason') or pod['status'].get('message')}")
        if phase in ("Succeeded", "Failed") and (result.metrics_s is not None or result.metrics_since is None):
            result.done = True

    def _check_node(self, pool: PoolOutput, result: PoolResult, pod_created: str) -> None:
        node = self.api.request("GET", f"/api/v1/nodes/{result.node}")
        labels = node["metadata"].get("labels", {})
        wrong = {key: labels.get(key) for key, value in pool.labels.items() if labels.get(key) != value}
        if wrong:
            result.problems.append(f"node {result.node} is not in pool {pool.name}: {wrong}")
        resource = gpu_resource(pool) or ""
        if not int(node.get("status", {}).get("allocatable", {}).get(resource, "0")):
            result.problems.append(f"node {result.node} advertises no {resource}")
        result.new_node = _time(node["metadata"]["creationTimestamp"]) >= _time(pod_created)
        ready = _condition(node, "Ready")
        if result.new_node:
            result.scale_up_s = _seconds(pod_created, ready["lastTransitionTime"] if ready else None)

    def _check_log(self, result: PoolResult) -> None:
        log = str(self.api.request("GET", f"/api/v1/namespaces/{NAMESPACE}/pods/{result.pod}/log"))
        gpus = NVIDIA_SMI_GPU.findall(log)
        allocated = VISIBLE_DEVICES.search(log)
        if gpus:
            result.gpu_seen = gpus[0].split(" (UUID")[0]
        elif self.fake_gpus and allocated:
            # kind's fake GPUs have no driver: the device plugin's allocation is what there is to see.
            result.gpu_seen = f"fake GPU {allocated.group(1)}"
        else:
            result.problems.append(f"the pod saw no GPU: {log.strip()[-200:]!r}")

    def _query(self, promql: str) -> list[dict[str, Any]]:
        response = self.api.request("GET", f"{self.prometheus}/query?{urllib.parse.urlencode({'query': promql})}")
        return response["data"]["result"]

    def _check_metrics(self, result: PoolResult) -> None:
        assert result.metrics_since is not None
        # The gpu-metrics scrape labels every GPU sample with the Kubernetes node its exporter runs on.
        if self._query(f'DCGM_FI_DEV_GPU_UTIL{{job="{GPU_METRICS_JOB}",node="{result.node}"}}'):
            result.metrics_s = self.clock() - result.metrics_since
        elif self.clock() - result.metrics_since > self.metrics_timeout:
            result.problems.append(f"no GPU metrics of {result.node} in Prometheus after {self.metrics_timeout:.0f}s")
            result.metrics_since = None

    def check_rules(self) -> list[str]:
        """Every platform alert rule loaded and healthy, none of them firing."""
        groups = self.api.request("GET", f"{self.prometheus}/rules")["data"]["groups"]
        # The platform's own groups (components/gpu_rules.py), whichever of their alerts the stack's pools have.
        rules = {rule["name"]: rule for group in groups if group["name"].startswith("mlplatform-")
                 for rule in group["rules"] if rule.get("type") == "alerting"}
        # The alerts every stack with GPU pools has; those that depend on a pool's sharing or a device plugin
        # are judged like the rest whenever they are loaded.
        expected = [rule["alert"] for rule in gpu_alert_rules((), None)]
        problems = [f"{name} is not loaded" for name in expected if name not in rules]
        problems += [f"{name} is unhealthy: {rule.get('lastError', '')}" for name, rule in rules.items()
                     if rule.get("health") != "ok"]
        problems += [f"{name} is firing" for name, rule in rules.items() if rule.get("state") == "firing"]
        return problems

    def cleanup(self, results: list[PoolResult]) -> None:
        for result in results:
            if result.pod:
                self._delete(f"/api/v1/namespaces/{NAMESPACE}/pods/{result.pod}")
        self._delete(f"/api/v1/namespaces/{NAMESPACE}")
        if self._nccl_namespace:
            for check in self.nccl_results:
                if check.job:
                    # Its pods with it: a Job's deletion alone would leave them to the garbage collector's pace.
                    self._delete(f"/apis/batch/v1/namespaces/{NCCL_NAMESPACE}/jobs/{check.job}",
                                 {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"})
            self._delete(f"/api/v1/namespaces/{NCCL_NAMESPACE}")

    def _delete(self, path: str, options: dict[str, Any] | None = None) -> None:
        try:
            self.api.request("DELETE", path, options)
        except ApiError as exc:
            if exc.status != 404:
                raise

    def _waiting_for(self, result: PoolResult) -> str:
        if result.done:
            return "done" + (f": {'; '.join(result.problems)}" if result.problems else "")
        if not result.node:
            return f"pod {result.pod} waiting for a node (a pool at zero nodes scales up first: minutes)"
        if result.finished_s is None:
            return f"pod {result.pod} on node {result.node}, waiting for it to finish"
        return f"waiting for the GPU metrics of node {result.node} in Prometheus"

    # ---- the whole run ----

    def run(self) -> tuple[list[PoolResult], list[str] | None]:
        """Each pool's result, and the alert rules' problems (None where they cannot be judged: no pod runs)."""
        self._create_namespace()
        pools = self.platform.gpu_pools
        results: list[PoolResult] = []
        failed = True
        try:
            results = [self._start(pool) for pool in pools]
            started = self.clock()
            deadline = started + self.timeout
            reported: dict[str, tuple[str, float]] = {}
            while True:
                for pool, result in zip(pools, results):
                    if not result.done:
                        self._follow(pool, result)
                    status = self._waiting_for(result)
                    last, at = reported.get(pool.name, ("", -self.report_every))
                    if status != last or (not result.done and self.clock() - at >= self.report_every):
                        self.report(f"pool {pool.name}: {status} ({self.clock() - started:.0f}s of at most "
                                    f"{self.timeout:.0f}s)")
                        reported[pool.name] = (status, self.clock())
                if all(r.done for r in results):
                    break
                if self.clock() > deadline:
                    for result in results:
                        if not result.done:
                            result.problems.append(f"not finished after {self.timeout:.0f}s"
                                                   + ("" if result.node else ": no node came up"))
                    break
                self.sleep(self.poll)
            self.run_nccl()
            if self.pods_run:
                self.report("checking the platform's alert rules in Prometheus")
            outcome = results, self.check_rules() if self.pods_run else None
            failed = False
            return outcome
        finally:
            try:
                self.cleanup(results)
            except (ApiError, Unreachable) as exc:
                if not failed:
                    raise
                # The run's own failure is what the user must see: a cleanup failing after it (often for the
                # same cause, an API gone away) is said, never raised in its place.
                self.report(f"cleanup failed too ({exc}): delete what is left with `kubectl delete namespace "
                            f"{NAMESPACE}" + (f" {NCCL_NAMESPACE}" if self._nccl_namespace else "") + "`")

    # ---- the NCCL check ----

    def run_nccl(self) -> None:
        """A two-node all-reduce on each multi-node pool, all pools at once, each within the run's timeout."""
        pools = [pool for pool in self.platform.gpu_pools if pool.multi_node]
        if not pools:
            return
        self.nccl_results = [NcclResult(pool.name) for pool in pools]
        try:
            private_key, public_key = self.ssh_keys()
        except nccl.NoKeys as exc:
            for result in self.nccl_results:
                result.problems.append(f"NOT MEASURED: {exc}")
            return
        self._nccl_namespace = True
        self._create_namespace(nccl.namespace(pools))
        for pool, result in zip(pools, self.nccl_results):
            for obj in nccl.manifests(pool, self.run_id, public_key, private_key, self.platform.topology_levels):
                group = "/api/v1" if obj["apiVersion"] == "v1" else f"/apis/{obj['apiVersion']}"
                self.api.request("POST", f"{group}/namespaces/{NCCL_NAMESPACE}/{obj['kind'].lower()}s", obj)
                if obj["kind"] == "Job":
                    result.job = obj["metadata"]["name"]
        started = self.clock()
        reported: dict[str, tuple[str, float]] = {}
        while True:
            for pool, result in zip(pools, self.nccl_results):
                if not result.done:
                    self._follow_nccl(pool, result)
                status = ("done: " + result.verdict() if result.done else
                          f"job {result.job} waiting for two whole nodes" if not result.nodes else
                          f"job {result.job} on {', '.join(result.nodes)}, waiting for the all-reduce to finish")
                last, at = reported.get(pool.name, ("", -self.report_every))
                if status != last or (not result.done and self.clock() - at >= self.report_every):
                    self.report(f"NCCL check of pool {pool.name}: {status} ({self.clock() - started:.0f}s of at "
                                f"most {self.timeout:.0f}s)")
                    reported[pool.name] = (status, self.clock())
            if all(r.done for r in self.nccl_results):
                return
            if self.clock() > started + self.timeout:
                for result in self.nccl_results:
                    if not result.done:
                        result.problems.append(f"not finished after {self.timeout:.0f}s"
                                               + ("" if result.nodes else ": no two nodes came up"))
                return
            self.sleep(self.poll)

    def _follow_nccl(self, pool: PoolOutput, result: NcclResult) -> None:
        selector = urllib.parse.urlencode({"labelSelector": f"batch.kubernetes.io/job-name={result.job}"})
        pods = self.api.request("GET", f"/api/v1/namespaces/{NCCL_NAMESPACE}/pods?{selector}")["items"]
        by_index = {p["metadata"].get("annotations", {}).get("batch.kubernetes.io/job-completion-index"): p
                    for p in pods}
        bound = [by_index[i]["spec"].get("nodeName") if i in by_index else None for i in ("0", "1")]
        if not result.nodes and all(bound):
            result.nodes = [str(node) for node in bound]
            self._check_nccl_nodes(pool, result)
            if not self.pods_run:
                result.not_measured = NCCL_NOT_RUN
                result.done = True
                return
        # Pod 0's end is the result: pod 1 ends only when pod 0 tells it to, so the Job's own end may come later.
        launcher = by_index.get("0")
        status = launcher.get("status", {}) if launcher else {}
        if status.get("phase") not in ("Succeeded", "Failed"):
            job = self.api.request("GET", f"/apis/batch/v1/namespaces/{NCCL_NAMESPACE}/jobs/{result.job}")
            failed = _condition(job, "Failed")
            if failed:  # its deadline, or pod 1 failing first
                result.problems.append(f"the job failed: {failed.get('reason')}: {failed.get('message', '')}"
                                       .rstrip(": "))
                result.done = True
            return
        result.done = True
        if status["phase"] == "Failed":
            exit_codes = [c["state"]["terminated"].get("exitCode") for c in status.get("containerStatuses") or []
                          if "terminated" in c.get("state", {})]
            result.problems.append(f"pod 0 failed (exit code {', '.join(map(str, exit_codes)) or '?'})")
        assert launcher is not None
        log = str(self.api.request("GET", f"/api/v1/namespaces/{NCCL_NAMESPACE}/pods/"
                                          f"{launcher['metadata']['name']}/log"))
        self._judge_nccl(result, log)

    def _check_nccl_nodes(self, pool: PoolOutput, result: NcclResult) -> None:
        if len(set(result.nodes)) != 2:
            result.problems.append(f"both pods on node {result.nodes[0]}: whole-node pods must take two nodes")
        types = set()
        for name in sorted(set(result.nodes)):
            labels = self.api.request("GET", f"/api/v1/nodes/{name}")["metadata"].get("labels", {})
            wrong = {key: labels.get(key) for key, value in pool.labels.items() if labels.get(key) != value}
            if wrong:
                result.problems.append(f"node {name} is not in pool {pool.name}: {wrong}")
            types.add(labels.get(INSTANCE_TYPE_LABEL, ""))
        result.instance_type = ",".join(sorted(types))
        result.floor = nccl.FLOORS.get(result.instance_type)

    def _judge_nccl(self, result: NcclResult, log: str) -> None:
        output = nccl.parse(log)
        result.output = output
        if output.avg_busbw is None:
            result.problems.append(f"NOT MEASURED: the pods produced no nccl-tests output: {log.strip()[-300:]!r}")
            return
        if output.wrong_values:
            result.problems.append(f"{output.wrong_values} wrong values: the all-reduce's results are corrupt")
        floor = result.floor
        if floor is None:
            result.not_judged = (f"NOT JUDGED: no published rate for {result.instance_type or 'an unlabelled node'} "
                                 "(verify/nccl.py FLOORS)")
        elif floor.unjudged:
            result.not_judged = f"NOT JUDGED: {floor.unjudged} (floor once it does: {floor.floor_gbs:.0f} GB/s)"
        elif output.avg_busbw < floor.floor_gbs:
            result.problems.append(f"bus bandwidth {output.avg_busbw:.1f} GB/s is below the floor "
                                   f"{floor.floor_gbs:.0f} GB/s (half of {floor.link_gbps} Gbps)"
                                   + (f", network {output.network}" if output.network else ""))

    def _create_namespace(self, manifest: dict[str, Any] | None = None) -> None:
        """The run's namespace. One left by an interrupted run is reused; one still being deleted by the previous
        run's cleanup refuses new pods (403), so the run waits until it is gone and creates it anew."""
        manifest = manifest or namespace()
        name = manifest["metadata"]["name"]
        deadline = self.clock() + self.namespace_timeout
        while True:
            try:
                self.api.request("POST", "/api/v1/namespaces", manifest)
                return
            except ApiError as exc:
                if exc.status != 409:
                    raise
            try:
                existing = self.api.request("GET", f"/api/v1/namespaces/{name}")
            except ApiError as exc:
                if exc.status == 404:  # gone between the two requests: create it
                    continue
                raise
            if existing.get("status", {}).get("phase") != "Terminating":
                return  # left by an interrupted run: reuse it
            if self.clock() > deadline:
                raise ApiError(409, f"namespace {name} is still terminating after {self.namespace_timeout:.0f}s "
                                    f"(a previous run's cleanup): see what holds it with `kubectl get namespace "
                                    f"{name} -o yaml`, then run again")
            self.report(f"namespace {name} is terminating (a previous run's cleanup): waiting for it to go")
            self.sleep(self.poll)
