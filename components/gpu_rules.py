"""The GPU alerting and GPU cost rules: the PrometheusRule groups monitoring deploys, and the file promtool tests.

Every rule reads series as our `gpu-metrics` scrape leaves them (see `gpu_metrics_relabelings` in
components/monitoring.py): `node` is the Kubernetes node the exporter runs on, `hostname` the exporter's own name
for it, and `namespace`/`pod`/`container` name the workload holding a GPU, on GPUs in use only.

Metric sources: dcgm-exporter 4.8.2 with our counters (components/dcgm-counters.csv), kube-state-metrics (node
labels allowed by `node_label_allowlist`), Prometheus's own `up`: each read from the platform's own scrape only
(`PLATFORM_MARK`), never from a team's exporter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from core.handle import GpuPool
from components.kube import DaemonSetRef
from config.queues import gpu_resource

# The scrape job every GPU metric carries, whichever exporter serves it: a value no team monitor can give its
# own series, so that the rules trust no team's exporter. prometheus-operator sets a ServiceMonitor's job to its
# Service's name or to the value of the Service label named by jobLabel, and a PodMonitor's to
# "<namespace>/<name>" or a pod label's value; Service names (DNS-1035 labels) and label values never contain
# ':'. Team monitors may not write job themselves (components/admission.py, RESERVED_TARGET_LABELS).
GPU_METRICS_JOB = "mlplatform:gpu-metrics"
# The name of the platform's ServiceMonitor of the GPU exporters.
GPU_METRICS_MONITOR = "gpu-metrics"
# Who scraped a series: `platform` on the platform's own scrapes of kube-state-metrics and the GPU exporters, and
# on no other. A job name is no proof: a team Service named kube-state-metrics gives its series that job, and an
# exporter prints any series it likes (kube_pod_container_resource_requests of a real GPU node included). So
# Prometheus stamps every other scrape with another value (components/monitoring.py, the default scrape class):
# a target label, so that an exporter printing the label itself sees it renamed exported_mlplatform_source, and
# team monitors may not write it (components/admission.py, the team-monitor-labels policy, always Deny). A
# series without the label (dropped by a metric relabeling) is not selected either.
SOURCE_LABEL = "mlplatform_source"
PLATFORM_SOURCE = "platform"
# The value every other scrape carries.
OTHER_SOURCE = "other"
PLATFORM_MARK = f'{SOURCE_LABEL}="{PLATFORM_SOURCE}"'
# kube-state-metrics' job, as kube-prometheus-stack's own rules know it (its subchart's name).
KUBE_STATE_METRICS_JOB = "kube-state-metrics"
# The label matchers of every series the rules read from kube-state-metrics and from the GPU exporters.
KSM = f'job="{KUBE_STATE_METRICS_JOB}", {PLATFORM_MARK}'
GPU_JOB = f'job="{GPU_METRICS_JOB}", {PLATFORM_MARK}'
# The names of the platform's recording rules, which later rules and the dashboard read with no other matcher:
# no scrape may bring in a series so named (the default scrape class drops them), or an exporter printing
# mlplatform:gpu_price_per_hour{pool="a100"} 0 would price every team's GPUs, or break the joins on it.
RECORDED_NAMES = "mlplatform:.+|.+:mlplatform_.+"
# The usage rules run once a minute, so that each of their samples stands for one minute: GPU-hours over a
# range are `sum_over_time(<rule>[range]) / 60`.
USAGE_INTERVAL = "1m"
SAMPLES_PER_HOUR = 60

# XIDs that mean failing hardware, with NVIDIA's meaning (NVIDIA's Xid catalog,
# https://docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html, and dcgm-exporter's xid_errors.go). Any
# other XID is most often the application's own fault (e.g. 13 graphics engine exception, 31 memory page fault,
# 43 GPU stopped processing after a user's kernel fault) and warns.
HARDWARE_XIDS: Mapping[int, str] = {
    48: "double-bit ECC error",
    64: "ECC page retirement or row-remapper recording failure",
    74: "NVLink error",
    79: "GPU has fallen off the bus",
    94: "contained ECC error",
    95: "uncontained ECC error",
    119: "GSP RPC timeout",
    120: "GSP error",
    140: "unrecovered ECC error",
}


def _alert(name: str, expr: str, duration: str, severity: str, summary: str, description: str, *,
           keep_firing_for: str | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "alert": name, "expr": expr, "for": duration, "labels": {"severity": severity},
        # The runbook section of docs/monitoring.md for the alert, by its heading's anchor.
        "annotations": {"summary": summary, "description": description,
                        "runbook": f"docs/monitoring.md#{name.lower()}"}}
    if keep_firing_for:
        rule["keep_firing_for"] = keep_firing_for
    return rule


def _record(name: str, expr: str, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"record": name, "expr": expr}
    if labels:
        rule["labels"] = dict(labels)
    return rule


def kube_state_label(key: str) -> str:
    """kube-state-metrics' name for a Kubernetes label on its `kube_*_labels` series."""
    return "label_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)


def node_label_allowlist(pools: tuple[GpuPool, ...]) -> list[str]:
    """kube-state-metrics' --metric-labels-allowlist entry that exposes the node labels naming a GPU pool."""
    keys = sorted({key for pool in pools for key in pool.labels})
    return [f"nodes=[{','.join(keys)}]"] if keys else []


def kube_state_resource(name: str) -> str:
    """kube-state-metrics' `resource` label for an extended resource (nvidia.com/gpu.shared: nvidia_com_gpu_shared)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def advertised_resource(pool: GpuPool) -> str:
    """kube-state-metrics' name of the resource the pool's nodes advertise their GPUs as."""
    return kube_state_resource(gpu_resource(pool.sharing))


def units_per_gpu(pool: GpuPool) -> int:
    """How many units of that resource one physical GPU of the pool advertises: its time-sliced shares,
    renamed or not, and the MIG partitions the cloud cuts it into."""
    slicing = pool.sharing.time_slicing
    return (slicing.replicas if slicing is not None else 1) * pool.mig_partitions


def advertised_gpus_per_node(pool: GpuPool) -> int | None:
    """The units of its resource a healthy node of the pool advertises; None where the platform cannot know it
    (MIG partitions advertised per profile, or cut on the node outside the cloud's control)."""
    if pool.sharing.mig_strategy == "mixed" or (pool.sharing.mig_strategy == "single" and pool.mig_partitions == 1):
        return None
    return pool.gpus_per_node * units_per_gpu(pool)


def gpu_resources_regex(pools: tuple[GpuPool, ...]) -> str:
    """The kube-state-metrics resource names of every pool's GPUs, as a PromQL regex."""
    return "|".join(sorted({advertised_resource(pool) for pool in pools}))


def _xid_meaning() -> str:
    """A template that names a hardware XID's meaning, from the alert's `xid` label."""
    branches = "".join(f'{{{{ else if eq $labels.xid "{code}" }}}}{meaning}'
                       for code, meaning in HARDWARE_XIDS.items())
    return "{{ if false }}" + branches + "{{ end }}"


# How long a hardware XID alert outlasts the exporter's 5-minute window: a night, so the morning still sees it.
XID_FAULT_KEEP_FIRING = "12h"

# Names the pod that holds the GPU, where one does.
HOLDER = "{{ with $labels.pod }} (in use by {{ $labels.namespace }}/{{ . }}){{ end }}"


def gpu_alert_rules(pools: tuple[GpuPool, ...], device_plugin: DaemonSetRef | None) -> list[dict[str, Any]]:
    used, free = f"DCGM_FI_DEV_FB_USED{{{GPU_JOB}}}", f"DCGM_FI_DEV_FB_FREE{{{GPU_JOB}}}"
    fb_used = f"{used} / ({used} + {free})"
    hardware_xids = "|".join(str(code) for code in HARDWARE_XIDS)
    # The exporter counts each XID code seen in its last 5 minutes (--xid-count-window-size), one series per code:
    # an alert on it fires for a new XID and clears by itself, and a restarted exporter starts from nothing.
    # DCGM_FI_DEV_XID_ERRORS, the last XID ever seen, stays set until the exporter restarts: never alert on it.
    new_xids = "max by (node, gpu, UUID, xid, namespace, pod) (DCGM_EXP_XID_ERRORS_COUNT{%s}) > 0"
    rules = [
        _alert("GpuAllocatedButIdle",
               "max by (namespace, pod, node, gpu) "
               f'(avg_over_time(DCGM_FI_DEV_GPU_UTIL{{{GPU_JOB}, pod!=""}}[30m])) < 5',
               "1h", "warning", "A GPU held by {{ $labels.namespace }}/{{ $labels.pod }} has been idle for an hour",
               "GPU {{ $labels.gpu }} on {{ $labels.node }} is allocated to {{ $labels.namespace }}/"
               "{{ $labels.pod }} but averaged under 5% utilisation for the last hour: a GPU paid for and unused. "
               "Ask the team to release it or fix the job's input pipeline."),
        _alert("GpuXidHardwareFault", new_xids % f'{GPU_JOB}, xid=~"{hardware_xids}"', "0m", "critical",
               "GPU {{ $labels.gpu }} on {{ $labels.node }} reported XID {{ $labels.xid }}: " + _xid_meaning(),
               "The driver reported XID {{ $labels.xid }} ({{ $value }} time(s) in 5 minutes)" + HOLDER + ", a code "
               "NVIDIA lists for failing hardware. Cordon and drain the node, then reset the GPU or replace the node.",
               # The exporter forgets the XID after its 5-minute window; the failing GPU stays until someone acts.
               keep_firing_for=XID_FAULT_KEEP_FIRING),
        _alert("GpuXidError", new_xids % f'{GPU_JOB}, xid!="", xid!~"{hardware_xids}"', "0m", "warning",
               "GPU {{ $labels.gpu }} on {{ $labels.node }} reported XID {{ $labels.xid }}",
               "The driver reported XID {{ $labels.xid }} ({{ $value }} time(s) in 5 minutes)" + HOLDER + ". Most "
               "such XIDs come from the application (an illegal memory access, a kernel fault); look the code up in "
               "NVIDIA's XID catalog and the pod's logs. The same XID on several GPUs of one node points at the node."),
        _alert("GpuTemperatureHigh", f"max by (node, gpu) (DCGM_FI_DEV_GPU_TEMP{{{GPU_JOB}}}) > 85", "10m", "warning",
               "GPU {{ $labels.gpu }} on {{ $labels.node }} is at {{ $value }} C",
               "The GPU has been above 85 C for 10 minutes and will throttle its clocks; check the node's cooling "
               "and power settings."),
        _alert("GpuThermalThrottling",
               f"max by (node, gpu) (rate(DCGM_FI_DEV_THERMAL_VIOLATION{{{GPU_JOB}}}[5m])) / 1e9 > 0.1", "15m",
               "warning",
               "GPU {{ $labels.gpu }} on {{ $labels.node }} is slowed down by heat",
               "For 15 minutes the GPU has spent over 10% of its time with clocks lowered for thermal reasons "
               "({{ $value | humanizePercentage }} now): jobs on it run slower, and heat precedes failures. Check "
               "the node's cooling."),
        _alert("GpuPowerThrottling",
               f"max by (node, gpu) (rate(DCGM_FI_DEV_POWER_VIOLATION{{{GPU_JOB}}}[5m])) / 1e9 > 0.5", "30m", "warning",
               "GPU {{ $labels.gpu }} on {{ $labels.node }} is held back by its power limit",
               "For 30 minutes the GPU has spent over half its time with clocks lowered to stay within its power "
               "limit ({{ $value | humanizePercentage }} now). Brief capping under full load is normal; sustained "
               "capping means a power limit set below the GPU's default or a power-delivery problem on the node."),
        _alert("GpuRowRemapPending", f"max by (node, gpu, UUID) (DCGM_FI_DEV_ROW_REMAP_PENDING{{{GPU_JOB}}}) > 0", "5m",
               "warning", "GPU {{ $labels.gpu }} on {{ $labels.node }} has a memory row remap pending",
               "The GPU found an uncorrectable memory error and marked a row for remapping, which takes effect at "
               "the next GPU reset. Drain the node and reset the GPU (or reboot the node) when convenient."),
        _alert("GpuRowRemapFailed", f"max by (node, gpu, UUID) (DCGM_FI_DEV_ROW_REMAP_FAILURE{{{GPU_JOB}}}) > 0", "0m",
               "critical", "GPU {{ $labels.gpu }} on {{ $labels.node }} could not remap a failing memory row",
               "The GPU has run out of spare memory rows: NVIDIA's threshold for replacing the board. Cordon and "
               "drain the node and replace it."),
        # Nearly full and still growing: TensorFlow, JAX and vLLM reserve most of a GPU's memory up front and
        # then hold it steady, which is healthy. A reservation's jump leaves the 15-minute window before `for`
        # has passed; memory that keeps growing near the top is heading for an out-of-memory error.
        _alert("GpuMemoryNearlyFull",
               f"max by (node, gpu, namespace, pod) ({fb_used}) > 0.95 and max by (node, gpu, namespace, pod) "
               f"(delta({used}[15m])) > 0", "20m",
               "warning", "GPU {{ $labels.gpu }} on {{ $labels.node }} is over 95% full and its memory keeps growing",
               "{{ $labels.namespace }}/{{ $labels.pod }} has taken more GPU memory in every quarter hour for 20 "
               "minutes with under 5% left: it is heading for an out-of-memory error. Look for memory that grows "
               "with each step (a leak, growing batches or sequences); lower the batch size or move to a GPU with "
               "more memory."),
        _alert("GpuMetricsExporterDown", f"up{{{GPU_JOB}}} == 0", "10m", "warning",
               "The GPU metrics exporter on {{ $labels.node }} is down",
               "Prometheus cannot scrape GPU metrics from {{ $labels.instance }} for 10 minutes: the GPU dashboard "
               "and the GPU alerts are blind for that node."),
        # Any DCGM metric will do: MIG-enabled GPUs report no DCGM_FI_DEV_GPU_UTIL, for one.
        _alert("GpuNodeWithoutGpuMetrics",
               "mlplatform:node_pool:info unless on (node) "
               f'group by (node) ({{{GPU_JOB}, __name__=~"DCGM_.+"}})', "15m",
               "warning", "GPU node {{ $labels.node }} of pool {{ $labels.pool }} sends no GPU metrics",
               "For 15 minutes no GPU metric came from a node of a GPU pool: its exporter is missing, not ready or "
               "cannot see the GPUs, so GPU faults on it go unnoticed."),
        _alert("TeamGpuQuotaNearlyExhausted",
               f'sum by (namespace) (kube_resourcequota{{{KSM}, resource="requests.nvidia.com/gpu", type="used"}}) / '
               f'sum by (namespace) (kube_resourcequota{{{KSM}, resource="requests.nvidia.com/gpu", type="hard"}} > 0) '
               '> 0.9',
               "30m", "info", "Team {{ $labels.namespace }} is using over 90% of its GPU quota",
               "The namespace's pods hold over 90% of its requests.nvidia.com/gpu quota; new GPU pods will be "
               "rejected once it is full. Raise the team's quota in the stack config if it is expected."),
    ]
    if any(advertised_gpus_per_node(pool) is not None for pool in pools):
        # Per resource: a renamed time-sliced pool advertises nvidia.com/gpu.shared and no nvidia.com/gpu. A node
        # that advertises none of its resource has no such series: count it as zero. group_left keeps the pool
        # label (a one-to-one match would keep only the labels matched on).
        resources = gpu_resources_regex(pools)
        allocatable = (f'max by (node, resource) (kube_node_status_allocatable{{{KSM}, resource=~"{resources}"}}) '
                       "or on (node, resource) 0 * mlplatform:node_gpus:advertised")
        rules.append(_alert(
            "GpuNodeAllocatableBelowPool",
            f"mlplatform:node_gpus:advertised > on (node, resource) group_left () ({allocatable})", "15m",
            "warning", "Node {{ $labels.node }} advertises fewer GPUs than its pool {{ $labels.pool }} should",
            "The node's allocatable GPUs ({{ $labels.resource }}) have been below the {{ $value }} a node of pool "
            "{{ $labels.pool }} advertises for 15 minutes: a GPU failed its health check or fell off the bus, or "
            "the device plugin on the node is not running. Jobs that need a whole node stay pending."))
    if device_plugin is not None:
        selector = f'{KSM}, namespace="{device_plugin.namespace}", daemonset="{device_plugin.name}"'
        rules.append(_alert(
            "GpuDevicePluginDown",
            f"kube_daemonset_status_desired_number_scheduled{{{selector}}} - "
            f"kube_daemonset_status_number_ready{{{selector}}} > 0",
            "15m", "critical", "The GPU device plugin is not ready on {{ $value }} node(s)",
            f"{device_plugin.namespace}/{device_plugin.name} has pods that are not ready: GPUs on those nodes are "
            "not advertised, so GPU pods stay pending while their nodes cost money."))
    return rules


def gpu_usage_rules(pools: tuple[GpuPool, ...], prices: Mapping[str, float]) -> list[dict[str, Any]]:
    """Which node belongs to which pool, and GPU time allocated and used per team (namespace), pool and cluster,
    priced where the pool has a price. In dependency order: Prometheus evaluates a group's rules in turn."""
    rules: list[dict[str, Any]] = []
    for pool in pools:
        matchers = ", ".join(f'{kube_state_label(key)}="{value}"' for key, value in sorted(pool.labels.items()))
        rules.append(_record("mlplatform:node_pool:info", f"max by (node) (kube_node_labels{{{KSM}, {matchers}}})",
                             {"pool": pool.name}))
    for pool in pools:
        if (advertised := advertised_gpus_per_node(pool)) is not None:
            rules.append(_record("mlplatform:node_gpus:advertised",
                                 f'{advertised} * mlplatform:node_pool:info{{pool="{pool.name}"}}',
                                 # The pool too, though the series has it: rules of one name need labels of
                                 # their own (promtool's duplicate-rules check).
                                 {"pool": pool.name, "resource": advertised_resource(pool)}))
    # What one requested unit of a pool's resource is of a physical GPU: a time-sliced share a fraction.
    rules += [_record("mlplatform:pool_gpus_per_unit", f"vector(1 / {units_per_gpu(pool)})", {"pool": pool.name})
              for pool in pools]
    pod = "namespace, pod, pool, node"
    rules += [
        # GPUs each pod holds, from its containers' requests (kube-state-metrics): a GPU is held from the moment
        # the kubelet admits the pod (a pod with a node) until it ends, and a share counts as its fraction. The
        # exporter cannot tell this: it gives a time-sliced GPU to one of its pods, a renamed share to none.
        _record("mlplatform:pod_gpus:allocated",
                "sum by (namespace, pod, node) "
                f'(kube_pod_container_resource_requests{{{KSM}, resource=~"{gpu_resources_regex(pools)}"}}) '
                '* on (namespace, pod) group_left () max by (namespace, pod) '
                f'(kube_pod_status_phase{{{KSM}, phase=~"Pending|Running"}} == 1) '
                "* on (node) group_left (pool) mlplatform:node_pool:info "
                "* on (pool) group_left () mlplatform:pool_gpus_per_unit"),
        # One series per GPU held by a pod: how busy it is, 0 to 1. Free GPUs have no namespace. On a shared GPU
        # the exporter (with virtual GPUs on) gives each pod its processes' share of the GPU's time.
        _record("mlplatform:gpu_allocated:busy_ratio",
                f'max by ({pod}, UUID) (DCGM_FI_DEV_GPU_UTIL{{{GPU_JOB}, namespace!=""}} '
                "* on (node) group_left (pool) mlplatform:node_pool:info) / 100"),
        # GPU time a pod uses, at most what it holds: a share busy while its neighbours idle uses only its own.
        _record("mlplatform:pod_gpus:used",
                f"(sum by ({pod}) (mlplatform:gpu_allocated:busy_ratio) < on ({pod}) mlplatform:pod_gpus:allocated) "
                f"or on ({pod}) (mlplatform:pod_gpus:allocated and on ({pod}) "
                f"sum by ({pod}) (mlplatform:gpu_allocated:busy_ratio))"),
        _record("namespace_pool:mlplatform_gpus_allocated:count",
                "sum by (namespace, pool) (mlplatform:pod_gpus:allocated)"),
        _record("namespace_pool:mlplatform_gpus_used:sum", "sum by (namespace, pool) (mlplatform:pod_gpus:used)"),
    ]
    for level, by in (("pool", "by (pool) "), ("cluster", "")):
        rules += [_record(f"{level}:mlplatform_gpus_allocated:sum",
                          f"sum {by}(namespace_pool:mlplatform_gpus_allocated:count)"),
                  _record(f"{level}:mlplatform_gpus_used:sum", f"sum {by}(namespace_pool:mlplatform_gpus_used:sum)")]
    for level, allocated, used in (
            ("namespace_pool", "namespace_pool:mlplatform_gpus_allocated:count",
             "namespace_pool:mlplatform_gpus_used:sum"),
            ("pool", "pool:mlplatform_gpus_allocated:sum", "pool:mlplatform_gpus_used:sum"),
            ("cluster", "cluster:mlplatform_gpus_allocated:sum", "cluster:mlplatform_gpus_used:sum")):
        rules.append(_record(f"{level}:mlplatform_gpus_idle:ratio", f"1 - {used} / {allocated}"))
    if prices:
        rules += [_record("mlplatform:gpu_price_per_hour", f"vector({price})", {"pool": pool})
                  for pool, price in sorted(prices.items())]
        rules += [
            _record("namespace_pool:mlplatform_gpu_spend_per_hour:sum",
                    "namespace_pool:mlplatform_gpus_allocated:count * on (pool) group_left () "
                    "mlplatform:gpu_price_per_hour"),
            _record("namespace_pool:mlplatform_gpu_idle_spend_per_hour:sum",
                    "(namespace_pool:mlplatform_gpus_allocated:count - namespace_pool:mlplatform_gpus_used:sum) "
                    "* on (pool) group_left () mlplatform:gpu_price_per_hour"),
        ]
    return rules


def gpu_rule_groups(pools: tuple[GpuPool, ...], device_plugin: DaemonSetRef | None,
                    prices: Mapping[str, float]) -> list[dict[str, Any]]:
    """The PrometheusRule's groups, as `promtool` reads them from a rule file."""
    return [{"name": "mlplatform-gpu-usage", "interval": USAGE_INTERVAL, "rules": gpu_usage_rules(pools, prices)},
            {"name": "mlplatform-gpu", "rules": gpu_alert_rules(pools, device_plugin)}]
