"""Where EKS nodes sit on AWS's network: the node labels multi-node jobs are placed by.

EKS labels each node of an instance type that has EC2 instance topology (p4d, p5, p5e, p5en, trn among them)
with its network nodes, from the broadest layer to the one the instance connects to (EKS User Guide, "Place
distributed AI/ML workloads with network topology labels", docs.aws.amazon.com/eks/latest/userguide/
ml-workload-topology.html; EC2 User Guide, "How Amazon EC2 instance topology works"). Nodes sharing a layer-3
value are the closest. A fourth layer exists only on some types; the three every such type has are the levels.
"""

from __future__ import annotations

from core.vocabulary import HOSTNAME_LABEL

EKS_TOPOLOGY_LEVELS = ("topology.k8s.aws/network-node-layer-1", "topology.k8s.aws/network-node-layer-2",
                       "topology.k8s.aws/network-node-layer-3", HOSTNAME_LABEL)
