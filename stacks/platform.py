"""A platform stack: cluster, then what runs on it, then one namespace per team."""

from __future__ import annotations

import pulumi

from components.admission import TeamAdmission
from components.gang_admission import GangAdmission
from components.gpu import GpuEnablement
from components.jobset import JobSets
from components.monitoring import Monitoring
from components.pod_security import TeamPodSecurity, gpu_fabric
from components.queues import Queues
from components.team import TeamNamespace
from config import load_platform_config
from config.errors import PROJECT
from config.models import PlatformConfig
from config.queues import pool_shapes, queue_layout
from core.handle import nccl_settings
from core.outputs import TeamBudget, export_platform


def build(config: PlatformConfig) -> None:
    cluster = config.cluster.build()
    layout = queue_layout(pool_shapes(config.cluster), config.teams)
    gpu = GpuEnablement("gpu", cluster)
    monitoring = Monitoring("monitoring", cluster, config.monitoring,
                            grafana_admin_password=pulumi.Config(PROJECT).get_secret("grafanaAdminPassword"),
                            device_plugin=gpu.device_plugin, gpu_metrics=gpu.gpu_metrics)
    queues = Queues("queues", cluster, config.teams, layout=layout, after=[monitoring.stack])
    jobsets = JobSets("jobsets", cluster)
    TeamAdmission("admission", cluster, layout, enforcement=config.admission_enforcement,
                  team_groups={team.name: list(team.groups.edit) for team in config.teams if not team.own_stack})
    GangAdmission("gang-admission", cluster, layout, enforcement=config.admission_enforcement)
    pod_security = TeamPodSecurity("pod-security", cluster)
    for team in config.teams:
        if not team.own_stack:
            TeamNamespace(f"team-{team.name}", team, cluster.provider,
                          monitoring_namespace=config.monitoring.namespace,
                          # Destroy deletes a team's JobSets while their controller still serves the webhooks
                          # that judge the updates of their deletion.
                          queue_after=[queues.release, *queues.cluster_queues, jobsets.release],
                          gpu_quota=layout.resource_ceilings(team.name),
                          nccl=nccl_settings([pool.describe() for pool in cluster.gpu_pools]),
                          gpu_fabric=gpu_fabric(team.pod_security, layout.host_access_pools(team.name)),
                          guarded_by=[pod_security])

    export_platform(
        cloud=cluster.cloud, cluster_name=cluster.name, cluster_identity=cluster.identity,
        kubeconfig=cluster.kubeconfig,
        kubernetes_version=cluster.kubernetes_version,
        gpu_pools=[pool.describe() for pool in cluster.gpu_pools], gpu_capacity=cluster.gpu_capacity,
        system_node_selector=cluster.system_node_selector,
        system_taints=[str(taint) for taint in cluster.system_taints], grafana=monitoring.grafana,
        grafana_admin_password=monitoring.grafana_admin_password, monitoring_namespace=config.monitoring.namespace,
        # `gpus` is the team's ceiling (its ResourceQuota), `guaranteed_gpus` what its queue is guaranteed.
        teams={team.name: TeamBudget(namespace=team.name, gpus=team.quota.gpus,
                                     guaranteed_gpus=layout.teams[team.name].guaranteed,
                                     guarantee=layout.teams[team.name].guarantee, cpu=team.quota.requests.cpu,
                                     memory=team.quota.requests.memory, own_stack=team.own_stack,
                                     gpu_direct_pools=tuple(layout.host_access_pools(team.name)))
               for team in config.teams},
        unguaranteed_gpus=layout.unguaranteed,
        pods_run=cluster.capabilities.pods_run, topology_levels=cluster.topology_levels)


def main() -> None:
    config, warnings = load_platform_config()
    for warning in warnings:
        pulumi.log.warn(warning)
    build(config)
