"""What every platform container asks of its node, in one place: requests, and a memory limit.

The system pool is sized from these (`make synth` prints the total requests per pool). Requests are what
the scheduler reserves; the memory limit stops a leaking controller from taking its node's memory from the
others (CPU is left unlimited: throttling a controller helps no one, and requests already share CPU fairly).
Figures are the upstream charts' own defaults where they set any (named below), otherwise what these
components use on a small cluster with headroom; raise them here when the cluster grows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pulumi_kubernetes.core.v1 import LimitRangeItemArgs


@dataclass(frozen=True)
class Size:
    cpu: str
    memory: str
    memory_limit: str

    def limit_range_item(self) -> LimitRangeItemArgs:
        """A LimitRange entry that gives this size to every container in its namespace that sets none."""
        return LimitRangeItemArgs(type="Container", default_request={"cpu": self.cpu, "memory": self.memory},
                                  default={"memory": self.memory_limit})

    def resources(self) -> dict[str, Any]:
        """The container's `resources` as charts and pod specs take them."""
        return {"requests": {"cpu": self.cpu, "memory": self.memory}, "limits": {"memory": self.memory_limit}}


# kube-prometheus-stack: the operator, its config reloader sidecar (in Prometheus and Alertmanager pods), the
# admission webhook's certificate Jobs, Alertmanager, Grafana and its sidecars, kube-state-metrics (memory
# grows with the number of objects: about 1000 teams' namespaces fit), node-exporter.
PROMETHEUS_OPERATOR = Size("100m", "128Mi", "512Mi")
CONFIG_RELOADER = Size("10m", "32Mi", "64Mi")
ADMISSION_JOB = Size("10m", "32Mi", "64Mi")
ALERTMANAGER = Size("20m", "64Mi", "256Mi")
GRAFANA = Size("100m", "256Mi", "512Mi")
GRAFANA_SIDECAR = Size("20m", "64Mi", "128Mi")
KUBE_STATE_METRICS = Size("50m", "128Mi", "512Mi")
NODE_EXPORTER = Size("20m", "32Mi", "64Mi")
# Prometheus's requests are stack config (`monitoring.prometheusRequests`); its memory limit is this many
# times its memory request: room for compaction and query peaks before the kernel kills it.
PROMETHEUS_MEMORY_LIMIT_FACTOR = 2

# Kueue's controller: the chart's own default requests (charts/kueue values.yaml), limit with headroom for
# one ClusterQueue and LocalQueue per team.
KUEUE_MANAGER = Size("500m", "512Mi", "1Gi")
# JobSet's controller: the chart's own default requests (charts/jobset values.yaml); its 4Gi limit is sized for
# thousands of JobSets, a team platform's few hundred fit in 1Gi.
JOBSET_CONTROLLER = Size("500m", "128Mi", "1Gi")
# Karpenter's controller: requests as its chart's values.yaml suggests, limit as its docs recommend.
KARPENTER_CONTROLLER = Size("500m", "512Mi", "1Gi")

# Per GPU node: NVIDIA's device plugin (its containers and config manager sidecar share the chart's one
# `resources`), the DCGM exporter (the chart's own defaults: memory grows with GPUs per node).
DEVICE_PLUGIN = Size("50m", "64Mi", "256Mi")
DCGM_EXPORTER = Size("100m", "128Mi", "512Mi")
# AWS's EFA device plugin (the eks-charts chart sets no resources): a small per-node agent.
EFA_DEVICE_PLUGIN = Size("10m", "32Mi", "64Mi")

# Containers a chart gives no `resources` key for (the device plugin's config manager, init and sidecar; the
# fake operator's hostpath-init) get this from their namespace's LimitRange default.
UNSIZED_AGENT_CONTAINER = Size("10m", "32Mi", "64Mi")

# Run:ai's fake GPU operator on kind: its components' own chart defaults, and the two it leaves unsized.
FAKE_GPU_COMPONENT = Size("100m", "100Mi", "200Mi")
