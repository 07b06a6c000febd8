"""Where GKE nodes sit on Google's network, and which machines are placed for multi-node jobs.

GKE labels nodes placed by a compact placement policy or a dense reservation with their cluster block,
sub-block and host (Google Cloud, "Schedule GKE workloads with Topology Aware Scheduling",
cloud.google.com/ai-hypercomputer/docs/workloads/schedule-gke-workloads-tas: the Kueue Topology there has these
levels, then kubernetes.io/hostname).
"""

from __future__ import annotations

from core.vocabulary import HOSTNAME_LABEL

GKE_TOPOLOGY_LEVELS = ("cloud.google.com/gce-topology-block", "cloud.google.com/gce-topology-subblock",
                       "cloud.google.com/gce-topology-host", HOSTNAME_LABEL)

# The machine types a multiNode pool may have: the full-size A3 shapes, whose eight GPUs each have their own
# NIC for GPU-to-GPU traffic between nodes (GPUDirect-TCPX on A3 High, -TCPXO on A3 Mega, RDMA on A3 Ultra;
# Compute Engine, "GPU machine types" and "Maximize GPU network bandwidth"), and which compact placement
# places close together. Smaller A3 High shapes and the other families have one NIC for everything.
MULTI_NODE_MACHINES = frozenset({"a3-highgpu-8g", "a3-megagpu-8g", "a3-ultragpu-8g"})
