"""Cluster components: each creates (or adopts) a cluster and ends in a ClusterHandle."""
