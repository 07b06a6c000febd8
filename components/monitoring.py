"""Monitoring: Prometheus, Alertmanager and Grafana, GPU metrics, a GPU dashboard and GPU alerts, as code.

GPU metrics come from NVIDIA's DCGM exporter on nodes with real GPUs, and from the fake GPU operator's
exporter on kind, under the same DCGM metric names and the same scrape job, so that the dashboard and the
alerts work unchanged on a laptop.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random
from pulumi_kubernetes.meta.v1 import ObjectMetaArgs

from components.handle import Capabilities, ClusterHandle, GpuPool, gpu_node_affinity, gpu_tolerations
from components.kube import SYSTEM_NODE_CRITICAL, DaemonSetRef, GpuMetricsSource, helm_release, platform_namespace
from versions import DCGM_EXPORTER, KUBE_PROMETHEUS_STACK
from config.models import MonitoringConfig
from config.quantity import parse_quantity

DASHBOARDS = Path(__file__).parent / "dashboards"
RELEASE = "kube-prometheus-stack"
GRAFANA_SERVICE = f"{RELEASE}-grafana"
GRAFANA_ADMIN_SECRET = "grafana-admin"
GRAFANA_ADMIN_USER = "admin"
# The scrape job every GPU metric carries, whichever exporter serves it.
GPU_METRICS_JOB = "gpu-metrics"


def kube_prometheus_stack_values(cluster: ClusterHandle, settings: MonitoringConfig) -> dict[str, Any]:
    system = dict(cluster.system_node_selector)
    prometheus: dict[str, Any] = {
        "retention": settings.retention,
        "resources": {"requests": {"cpu": settings.prometheus_requests.cpu,
                                   "memory": settings.prometheus_requests.memory}},
        "nodeSelector": system,
        # Discover monitors and rules in every namespace, whoever made them, not only this release's.
        "serviceMonitorSelectorNilUsesHelmValues": False,
        "podMonitorSelectorNilUsesHelmValues": False,
        "ruleSelectorNilUsesHelmValues": False,
        "probeSelectorNilUsesHelmValues": False,
    }
    if cluster.capabilities.persistent_volumes:
        claim: dict[str, Any] = {"accessModes": ["ReadWriteOnce"],
                                 "resources": {"requests": {"storage": settings.storage_size}}}
        if settings.storage_class:
            claim["storageClassName"] = settings.storage_class
        prometheus["storageSpec"] = {"volumeClaimTemplate": {"spec": claim}}
        # Stop short of a full disk: Prometheus then deletes old blocks instead of failing to write.
        gib = parse_quantity(settings.storage_size) / 2**30
        prometheus["retentionSize"] = f"{int(gib * Decimal('0.85'))}GB"
    return {
        "crds": {"enabled": True},
        "prometheusOperator": {"nodeSelector": system},
        "prometheus": {"prometheusSpec": prometheus},
        "alertmanager": {"enabled": True, "alertmanagerSpec": {"nodeSelector": system}},
        "grafana": {
            "enabled": True,
            "nodeSelector": system,
            "admin": {"existingSecret": GRAFANA_ADMIN_SECRET, "userKey": "admin-user", "passwordKey": "admin-password"},
            "sidecar": {"dashboards": {"enabled": True, "label": "grafana_dashboard", "labelValue": "1",
                                       "searchNamespace": "ALL"}},
        },
        "kube-state-metrics": {"nodeSelector": system},
    }


def dcgm_exporter_values(pools: tuple[GpuPool, ...], capabilities: Capabilities) -> dict[str, Any]:
    values: dict[str, Any] = {
        # Our own ServiceMonitor scrapes it, the same way as the fake exporter on kind.
        "serviceMonitor": {"enabled": False},
        "affinity": gpu_node_affinity(pools),
        "tolerations": gpu_tolerations(pools),
        "priorityClassName": SYSTEM_NODE_CRITICAL,
    }
    env: list[dict[str, str]] = []
    if capabilities.driver_host_path:
        # The driver is not on the node's usual paths (GKE): mount it where NVIDIA's tools look for it.
        values["extraHostVolumes"] = [{"name": "nvidia-driver", "hostPath": capabilities.driver_host_path}]
        values["extraVolumeMounts"] = [{"name": "nvidia-driver", "mountPath": "/usr/local/nvidia", "readOnly": True}]
        env.append({"name": "LD_LIBRARY_PATH", "value": "/usr/local/nvidia/lib64"})
    if capabilities.gpu_device_ids == "device-name":
        # Match the device plugin's IDs in the kubelet's pod-resources API, or no metric names its pod.
        env.append({"name": "DCGM_EXPORTER_KUBERNETES_GPU_ID_TYPE", "value": "device-name"})
    if env:
        values["extraEnv"] = env
    if capabilities.gpu_agents_privileged:
        # Merged into the chart's securityContext, whose allowPrivilegeEscalation: false the API server refuses
        # beside privileged: true.
        values["securityContext"] = {"privileged": True, "allowPrivilegeEscalation": True}
    return values


def _alert(name: str, expr: str, duration: str, severity: str, summary: str, description: str) -> dict[str, Any]:
    return {"alert": name, "expr": expr, "for": duration, "labels": {"severity": severity},
            "annotations": {"summary": summary, "description": description}}


def gpu_alert_rules(device_plugin: DaemonSetRef | None) -> list[dict[str, Any]]:
    fb_used = "DCGM_FI_DEV_FB_USED / (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE)"
    rules = [
        _alert("GpuAllocatedButIdle",
               'max by (namespace, pod, Hostname, gpu) (avg_over_time(DCGM_FI_DEV_GPU_UTIL{pod!=""}[30m])) < 5',
               "1h", "warning", "A GPU held by {{ $labels.namespace }}/{{ $labels.pod }} has been idle for an hour",
               "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} is allocated to {{ $labels.namespace }}/"
               "{{ $labels.pod }} but averaged under 5% utilisation for the last hour: a GPU paid for and unused. "
               "Ask the team to release it or fix the job's input pipeline."),
        _alert("GpuXidError", "max by (Hostname, gpu) (DCGM_FI_DEV_XID_ERRORS) > 0", "0m", "critical",
               "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} reported XID error {{ $value }}",
               "The driver reported XID {{ $value }}. XIDs 48, 63, 64, 74, 79, 94 and 95 mean a faulty or fallen-off "
               "GPU: cordon and drain the node and replace it. Others usually mean an application fault."),
        _alert("GpuTemperatureHigh", "max by (Hostname, gpu) (DCGM_FI_DEV_GPU_TEMP) > 85", "10m", "warning",
               "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} is at {{ $value }} C",
               "The GPU has been above 85 C for 10 minutes and will throttle its clocks; check the node's cooling "
               "and power settings."),
        _alert("GpuMemoryNearlyFull", f"max by (Hostname, gpu, namespace, pod) ({fb_used}) > 0.95", "15m",
               "warning", "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} has used 95% of its memory for 15 minutes",
               "{{ $labels.namespace }}/{{ $labels.pod }} is close to an out-of-memory error on the GPU; lower the "
               "batch size or move to a GPU with more memory."),
        _alert("GpuMetricsExporterDown", f'up{{job="{GPU_METRICS_JOB}"}} == 0', "10m", "warning",
               "The GPU metrics exporter on {{ $labels.instance }} is down",
               "Prometheus cannot scrape GPU metrics from {{ $labels.instance }} for 10 minutes: the GPU dashboard "
               "and the GPU alerts are blind for that node."),
        _alert("TeamGpuQuotaNearlyExhausted",
               'sum by (namespace) (kube_resourcequota{resource="requests.nvidia.com/gpu", type="used"}) / '
               'sum by (namespace) (kube_resourcequota{resource="requests.nvidia.com/gpu", type="hard"} > 0) > 0.9',
               "30m", "info", "Team {{ $labels.namespace }} is using over 90% of its GPU quota",
               "The namespace's pods hold over 90% of its requests.nvidia.com/gpu quota; new GPU pods will be "
               "rejected once it is full. Raise the team's quota in the stack config if it is expected."),
    ]
    if device_plugin is not None:
        selector = f'namespace="{device_plugin.namespace}", daemonset="{device_plugin.name}"'
        rules.append(_alert(
            "GpuDevicePluginDown",
            f"kube_daemonset_status_desired_number_scheduled{{{selector}}} - "
            f"kube_daemonset_status_number_ready{{{selector}}} > 0",
            "15m", "critical", "The GPU device plugin is not ready on {{ $value }} node(s)",
            f"{device_plugin.namespace}/{device_plugin.name} has pods that are not ready: GPUs on those nodes are "
            "not advertised, so GPU pods stay pending while their nodes cost money."))
    return rules


class Monitoring(pulumi.ComponentResource):
    def __init__(self, name: str, cluster: ClusterHandle, settings: MonitoringConfig, *,
                 grafana_admin_password: pulumi.Output[str] | None = None,
                 device_plugin: DaemonSetRef | None = None, gpu_metrics: GpuMetricsSource | None = None,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        """`gpu_metrics` is where another component already serves GPU metrics (the fake GPU operator on
        kind); without it, NVIDIA's DCGM exporter is installed on the GPU pools."""
        super().__init__("mlplatform:monitoring:Monitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=cluster.provider)
        # node-exporter and the DCGM exporter read their node's host: the namespace allows privileged pods.
        installs_dcgm_exporter = bool(cluster.gpu_pools) and gpu_metrics is None
        namespace = platform_namespace(
            f"{name}-namespace", settings.namespace, component="monitoring", pod_security="privileged", opts=child,
            critical_priority_classes=[SYSTEM_NODE_CRITICAL] if installs_dcgm_exporter else [])
        in_namespace = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[namespace]))

        if grafana_admin_password is None:
            grafana_admin_password = random.RandomPassword(
                f"{name}-grafana-admin-password", length=32, special=False,
                opts=pulumi.ResourceOptions(parent=self)).result
        # The password reaches Grafana through a Secret, never through Helm values.
        admin_secret = k8s.core.v1.Secret(
            f"{name}-grafana-admin",
            metadata=ObjectMetaArgs(name=GRAFANA_ADMIN_SECRET, namespace=settings.namespace),
            string_data={"admin-user": GRAFANA_ADMIN_USER,
                         "admin-password": pulumi.Output.secret(grafana_admin_password)},
            opts=in_namespace,
        )
        self.stack = stack = helm_release(f"{name}-kube-prometheus-stack", chart=KUBE_PROMETHEUS_STACK,
                             namespace=namespace, values=kube_prometheus_stack_values(cluster, settings),
                             release_name=RELEASE,
                             opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
                                 depends_on=[admin_secret])))
        # ServiceMonitors and PrometheusRules are custom resources: their CRDs come with the chart.
        after_crds = pulumi.ResourceOptions.merge(in_namespace, pulumi.ResourceOptions(depends_on=[stack]))

        if cluster.gpu_pools:
            exporters: list[pulumi.Resource] = [stack]
            source = gpu_metrics
            if source is None:
                exporters.append(helm_release(f"{name}-dcgm-exporter", chart=DCGM_EXPORTER,
                                              namespace=namespace,
                                              values=dcgm_exporter_values(cluster.gpu_pools, cluster.capabilities),
                                              release_name="dcgm-exporter", opts=child))
                source = GpuMetricsSource(settings.namespace, {"app.kubernetes.io/name": DCGM_EXPORTER.name},
                                          "metrics")
            k8s.apiextensions.CustomResource(
                f"{name}-gpu-metrics",
                api_version="monitoring.coreos.com/v1",
                kind="ServiceMonitor",
                metadata=ObjectMetaArgs(name=GPU_METRICS_JOB, namespace=settings.namespace),
                spec={
                    "namespaceSelector": {"matchNames": [source.namespace]},
                    "selector": {"matchLabels": source.selector},
                    "endpoints": [{
                        "port": source.port,
                        "interval": "15s",
                        # Keep the exporter's namespace/pod labels: they name the workload holding the GPU.
                        "honorLabels": True,
                        "relabelings": [{"action": "replace", "targetLabel": "job",
                                         "replacement": GPU_METRICS_JOB}],
                    }],
                },
                opts=pulumi.ResourceOptions.merge(in_namespace, pulumi.ResourceOptions(depends_on=exporters)),
            )

        dashboard = DASHBOARDS / "gpus.json"
        k8s.core.v1.ConfigMap(
            f"{name}-gpu-dashboard",
            metadata=ObjectMetaArgs(name="mlplatform-gpu-dashboard", namespace=settings.namespace,
                                    labels={"grafana_dashboard": "1"}),
            # Compact, so the ConfigMap stays far below its size limit; the file in the repo stays readable.
            data={dashboard.name: json.dumps(json.loads(dashboard.read_text()), separators=(",", ":"))},
            opts=in_namespace,
        )
        k8s.apiextensions.CustomResource(
            f"{name}-gpu-alerts",
            api_version="monitoring.coreos.com/v1",
            kind="PrometheusRule",
            metadata=ObjectMetaArgs(name="mlplatform-gpu-alerts", namespace=settings.namespace),
            spec={"groups": [{"name": "mlplatform-gpu", "rules": gpu_alert_rules(device_plugin)}]},
            opts=after_crds,
        )

        self.grafana_admin_password = pulumi.Output.secret(grafana_admin_password)
        self.grafana = {
            "service": f"{GRAFANA_SERVICE}.{settings.namespace}.svc",
            "portForward": f"kubectl -n {settings.namespace} port-forward svc/{GRAFANA_SERVICE} 3000:80",
            "url": "http://localhost:3000 (after the port-forward)",
            "adminUser": GRAFANA_ADMIN_USER,
            "adminPassword": "pulumi stack output grafanaAdminPassword --show-secrets, or the Secret "
                             f"{settings.namespace}/{GRAFANA_ADMIN_SECRET}",
        }
        self.register_outputs({"grafana": self.grafana, "grafanaAdminPassword": self.grafana_admin_password})
