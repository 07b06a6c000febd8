"""Where GKE nodes sit on Google's network (the machine types placed for multi-node jobs, and the GPU network
between them, are clouds/gke/config.py's GPU_FABRICS).

GKE labels nodes placed by a compact placement policy or a dense reservation with their cluster block,
sub-block and host (Google Cloud, "Schedule GKE workloads with Topology Aware Scheduling",
cloud.google.com/ai-hypercomputer/docs/workloads/schedule-gke-workloads-tas: the Kueue Topology there has these
levels, then kubernetes.io/hostname).
"""

from __future__ import annotations

from core.vocabulary import HOSTNAME_LABEL

GKE_TOPOLOGY_LEVELS = ("cloud.google.com/gce-topology-block", "cloud.google.com/gce-topology-subblock",
                       "cloud.google.com/gce-topology-host", HOSTNAME_LABEL)
