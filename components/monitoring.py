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

from components import sizing
from components.gpu_rules import (GPU_METRICS_JOB, GPU_METRICS_MONITOR, OTHER_SOURCE, PLATFORM_SOURCE, RECORDED_NAMES,
                                  SOURCE_LABEL, gpu_rule_groups, node_label_allowlist)
from core.handle import Capabilities, ClusterHandle, ControlPlanePart, GpuPool, gpu_node_affinity, gpu_tolerations
from components.kube import DaemonSetRef, GpuMetricsSource, helm_release, platform_namespace
from core.vocabulary import GPU_RESOURCE, KUBE_SYSTEM_NAMESPACE, PLATFORM_NAMESPACES, SYSTEM_NODE_CRITICAL
from versions import DCGM_EXPORTER, KUBE_PROMETHEUS_STACK
from config.models import MonitoringConfig
from config.queues import gpu_resource
from core.quantity import parse_quantity

DASHBOARDS = Path(__file__).parent / "dashboards"
# The fields dcgm-exporter serves: the chart's defaults and those the GPU alerts need.
DCGM_COUNTERS = Path(__file__).parent / "dcgm-counters.csv"
# The ConfigMap dcgm-exporter's chart (4.8.2, templates/metrics-configmap.yaml) fills from customMetrics, and
# where the exporter finds it.
DCGM_COUNTERS_CONFIGMAP = "exporter-metrics-config-map"
DCGM_COUNTERS_VOLUME = "exporter-metrics-volume"
DCGM_COUNTERS_FILE = "/etc/dcgm-exporter/counters.csv"
RELEASE = "kube-prometheus-stack"
GRAFANA_SERVICE = f"{RELEASE}-grafana"
GRAFANA_ADMIN_SECRET = "grafana-admin"
GRAFANA_ADMIN_USER = "admin"


# kube-prometheus-stack's switch for each control-plane part: off drops its ServiceMonitor and default alerts
# with it. Only what the cluster says Prometheus can reach is on (Capabilities.scrapeable).
CONTROL_PLANE_VALUES: dict[ControlPlanePart, str] = {
    "controller-manager": "kubeControllerManager", "scheduler": "kubeScheduler", "etcd": "kubeEtcd",
    "kube-proxy": "kubeProxy", "coredns": "coreDns", "kube-dns": "kubeDns"}
# Grafana's dashboard sidecar reads ConfigMaps in every namespace, and nothing else: the chart's own
# ClusterRole would also let it read every Secret of the cluster (charts/grafana templates/clusterrole.yaml).
GRAFANA_DASHBOARDS_ROLE = "mlplatform-grafana-dashboards"
# The scrape class of every monitor that names none: every team monitor (which may name none,
# components/admission.py) and the charts' own.
DEFAULT_SCRAPE_CLASS = "mlplatform"


def platform_source_relabeling() -> dict[str, Any]:
    """The target relabeling that marks a scrape as one the GPU and cost rules trust (components/gpu_rules.py):
    on the platform's own monitors of kube-state-metrics and the GPU exporters only."""
    return {"action": "replace", "targetLabel": SOURCE_LABEL, "replacement": PLATFORM_SOURCE}


def default_scrape_class() -> dict[str, Any]:
    """What Prometheus does to every scrape whose monitor names no scrape class.

    prometheus-operator puts a scrape class's relabelings after its own (job, namespace, pod...) and before the
    monitor's (pkg/prometheus/promcfg.go, v0.93): so every target carries mlplatform_source="other" unless its
    monitor's own relabelings say `platform`, which only the platform's monitors may (team monitors may not write
    the label, components/admission.py). A target label, not a sample's: an exporter printing
    mlplatform_source="platform" has it renamed exported_mlplatform_source (honorLabels, which would keep it, is
    refused to teams). The class's metric relabelings likewise run before the monitor's: they drop any scraped
    series named like the platform's recording rules, which the rules and the dashboard read by name alone.
    """
    return {"name": DEFAULT_SCRAPE_CLASS, "default": True,
            "relabelings": [{"action": "replace", "targetLabel": SOURCE_LABEL, "replacement": OTHER_SOURCE}],
            "metricRelabelings": [{"action": "drop", "sourceLabels": ["__name__"], "regex": RECORDED_NAMES}]}


def kube_prometheus_stack_values(cluster: ClusterHandle, settings: MonitoringConfig) -> dict[str, Any]:
    system = dict(cluster.system_node_selector)
    tolerations = cluster.system_tolerations
    memory_limit = parse_quantity(settings.prometheus_requests.memory) * sizing.PROMETHEUS_MEMORY_LIMIT_FACTOR
    prometheus: dict[str, Any] = {
        "retention": settings.retention,
        "resources": {"requests": {"cpu": settings.prometheus_requests.cpu,
                                   "memory": settings.prometheus_requests.memory},
                      "limits": {"memory": f"{int(memory_limit / 2**20)}Mi"}},
        "nodeSelector": system,
        "tolerations": tolerations,
        # Discover monitors and rules in every namespace, whoever made them, not only this release's.
        "serviceMonitorSelectorNilUsesHelmValues": False,
        "podMonitorSelectorNilUsesHelmValues": False,
        "ruleSelectorNilUsesHelmValues": False,
        "probeSelectorNilUsesHelmValues": False,
        # Every series a team's monitor scrapes carries the team's namespace, whatever its exporter or
        # relabelings say. The platform's own monitors and rules are left as they are: the GPU scrape names the
        # namespace of the pod holding a GPU, and the rules read other namespaces' series.
        "enforcedNamespaceLabel": "namespace",
        # The namespace alone does not tell the platform's kube-state-metrics from a team's exporter printing
        # kube-state-metrics' series about its own pods and any node: every scrape says whose it is.
        "scrapeClasses": [default_scrape_class()],
        "excludedFromEnforcement": [
            {"group": "monitoring.coreos.com", "resource": resource, "namespace": platform_namespace_name}
            for platform_namespace_name in sorted({settings.namespace, KUBE_SYSTEM_NAMESPACE, *PLATFORM_NAMESPACES})
            for resource in ("servicemonitors", "podmonitors", "probes", "scrapeconfigs", "prometheusrules")],
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
        # A StatefulSet keeps its claims when deleted (Kubernetes' default, Retain), so `pulumi destroy` would
        # leave the volume billing with no owner. The data is bounded by retention anyway; scaling keeps it.
        prometheus["persistentVolumeClaimRetentionPolicy"] = {"whenDeleted": "Delete", "whenScaled": "Retain"}
    scrapeable = cluster.capabilities.scrapeable
    return {
        "crds": {"enabled": True},
        "prometheusOperator": {
            "nodeSelector": system,
            "tolerations": tolerations,
            "resources": sizing.PROMETHEUS_OPERATOR.resources(),
            "prometheusConfigReloader": {"resources": sizing.CONFIG_RELOADER.resources()},
            # The Jobs that make and patch the webhook's certificate run on the system pool too. Where pods do not
            # really run, no Job makes the certificate and no operator serves the webhook: it is left out.
            "admissionWebhooks": {"enabled": cluster.capabilities.pods_run,
                                  "patch": {"nodeSelector": system, "tolerations": tolerations,
                                            "resources": sizing.ADMISSION_JOB.resources()}},
        },
        "prometheus": {"prometheusSpec": prometheus},
        "alertmanager": {"enabled": True, "alertmanagerSpec": {"nodeSelector": system,
                                                               "tolerations": tolerations,
                                                               "resources": sizing.ALERTMANAGER.resources()}},
        "grafana": {
            "enabled": True,
            "nodeSelector": system,
            "tolerations": tolerations,
            "resources": sizing.GRAFANA.resources(),
            "admin": {"existingSecret": GRAFANA_ADMIN_SECRET, "userKey": "admin-user", "passwordKey": "admin-password"},
            "rbac": {"useExistingClusterRole": GRAFANA_DASHBOARDS_ROLE},
            "sidecar": {"resources": sizing.GRAFANA_SIDECAR.resources(),
                        "dashboards": {"enabled": True, "label": "grafana_dashboard", "labelValue": "1",
                                       "searchNamespace": "ALL", "resource": "configmap"},
                        "datasources": {"resource": "configmap"}},
        },
        # The GPU usage rules and alerts tell a node's pool by its labels (components/gpu_rules.py).
        "kube-state-metrics": {"nodeSelector": system, "tolerations": tolerations,
                               "resources": sizing.KUBE_STATE_METRICS.resources(),
                               "metricLabelsAllowlist": node_label_allowlist(cluster.gpu_pools),
                               # Its series are the ones the GPU and cost rules read (merged into the chart's
                               # monitor values, whose honorLabels stays).
                               "prometheus": {"monitor": {"http": {"relabelings": [platform_source_relabeling()]}}}},
        # node-exporter is no GPU agent: on the system pool, tolerating its taint only, not every taint as the
        # chart's default does.
        "prometheus-node-exporter": {"nodeSelector": system, "tolerations": tolerations,
                                     "resources": sizing.NODE_EXPORTER.resources()},
        **{key: {"enabled": part in scrapeable} for part, key in CONTROL_PLANE_VALUES.items()},
    }


def dcgm_exporter_values(pools: tuple[GpuPool, ...], capabilities: Capabilities) -> dict[str, Any]:
    values: dict[str, Any] = {
        # Our own ServiceMonitor scrapes it, the same way as the fake exporter on kind.
        "serviceMonitor": {"enabled": False},
        "affinity": gpu_node_affinity(pools),
        "tolerations": gpu_tolerations(pools),
        "priorityClassName": SYSTEM_NODE_CRITICAL,
        # The chart's exporter-metrics-config-map holds our counters; the exporter reads them from the file its
        # arguments name (-f), mounted from that ConfigMap. All three are set here, not left to the chart's
        # defaults: Helm replaces a list value whole, so adding the driver's mount to extraVolumeMounts once
        # dropped the chart's counters mount, and the exporter read the image's built-in counters instead.
        "customMetrics": DCGM_COUNTERS.read_text(),
        "arguments": ["-f", DCGM_COUNTERS_FILE],
        "extraConfigMapVolumes": [{"name": DCGM_COUNTERS_VOLUME, "configMap": {
            "name": DCGM_COUNTERS_CONFIGMAP, "items": [{"key": "metrics", "path": "counters.csv"}]}}],
        "extraVolumeMounts": [{"name": DCGM_COUNTERS_VOLUME, "mountPath": DCGM_COUNTERS_FILE,
                               "subPath": "counters.csv", "readOnly": True}],
        "resources": sizing.DCGM_EXPORTER.resources(),
    }
    env: list[dict[str, str]] = []
    if capabilities.driver_host_path:
        # The driver is not on the node's usual paths (GKE): mount it where NVIDIA's tools look for it.
        values["extraHostVolumes"] = [{"name": "nvidia-driver", "hostPath": capabilities.driver_host_path}]
        values["extraVolumeMounts"].append({"name": "nvidia-driver", "mountPath": "/usr/local/nvidia",
                                            "readOnly": True})
        env.append({"name": "LD_LIBRARY_PATH", "value": "/usr/local/nvidia/lib64"})
    if any(pool.sharing.time_slicing is not None for pool in pools):
        # A time-sliced GPU is shared by several pods: give each its own series (dcgm-exporter's virtual GPUs,
        # `vgpu` label) instead of the whole GPU to one of them.
        env.append({"name": "KUBERNETES_VIRTUAL_GPUS", "value": "true"})
    if renamed := sorted({gpu_resource(pool.sharing) for pool in pools} - {GPU_RESOURCE}):
        # The exporter maps to pods only the GPUs of nvidia.com/gpu and the resources named here.
        env.append({"name": "NVIDIA_RESOURCE_NAMES", "value": ",".join(renamed)})
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


def gpu_metrics_relabelings() -> list[dict[str, Any]]:
    """Target labels of the `gpu-metrics` scrape: one job for both exporters, the platform's mark, and the
    Kubernetes node."""
    return [{"action": "replace", "targetLabel": "job", "replacement": GPU_METRICS_JOB},
            platform_source_relabeling(),
            # The exporter's own hostname label is a hash on kind's fake exporter: alerts and the usage rules
            # join GPUs to kube-state-metrics' nodes by this one.
            {"action": "replace", "sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"}]


def gpu_metrics_metric_relabelings() -> list[dict[str, Any]]:
    """Labels of every scraped GPU sample, the same from the fake exporter on kind and from dcgm-exporter.

    The exporters add namespace/pod/container to GPUs in use only. The scrape does not honour the exporter's
    labels, so Prometheus renames them exported_* and sets namespace/pod/container to the exporter's own pod's;
    here the exported ones replace them, and where there were none (a free GPU) the labels are removed instead
    of naming the exporter (Prometheus relabelling: a `replace` that yields an empty value deletes the label).
    """
    rules: list[dict[str, Any]] = [
        {"action": "replace", "sourceLabels": [f"exported_{label}"], "regex": "(.*)", "targetLabel": label,
         "replacement": "$1"}
        for label in ("namespace", "pod", "container")]
    rules.append({"action": "labeldrop", "regex": "exported_(namespace|pod|container)"})
    # dcgm-exporter after 4.8.2 names its hostname label `hostname`, 4.8.2 and the fake exporter `Hostname`.
    rules += [{"action": "replace", "sourceLabels": ["Hostname"], "regex": "(.+)", "targetLabel": "hostname",
               "replacement": "$1"},
              {"action": "labeldrop", "regex": "Hostname"}]
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
        dashboards_role = k8s.rbac.v1.ClusterRole(
            f"{name}-grafana-dashboards",
            metadata=ObjectMetaArgs(name=GRAFANA_DASHBOARDS_ROLE),
            rules=[k8s.rbac.v1.PolicyRuleArgs(api_groups=[""], resources=["configmaps"],
                                              verbs=["get", "list", "watch"])],
            opts=child,
        )
        self.stack = stack = helm_release(f"{name}-kube-prometheus-stack", chart=KUBE_PROMETHEUS_STACK,
                             namespace=namespace, values=kube_prometheus_stack_values(cluster, settings),
                             release_name=RELEASE, local_charts=cluster.local_charts,
                             opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
                                 depends_on=[admin_secret, dashboards_role])))
        # ServiceMonitors and PrometheusRules are custom resources: their CRDs come with the chart.
        after_crds = pulumi.ResourceOptions.merge(in_namespace, pulumi.ResourceOptions(depends_on=[stack]))

        if cluster.gpu_pools:
            exporters: list[pulumi.Resource] = [stack]
            source = gpu_metrics
            if source is None:
                exporters.append(helm_release(f"{name}-dcgm-exporter", chart=DCGM_EXPORTER,
                                              namespace=namespace,
                                              values=dcgm_exporter_values(cluster.gpu_pools, cluster.capabilities),
                                              local_charts=cluster.local_charts,
                                              release_name="dcgm-exporter", opts=child))
                source = GpuMetricsSource(settings.namespace, {"app.kubernetes.io/name": DCGM_EXPORTER.name},
                                          "metrics")
            k8s.apiextensions.CustomResource(
                f"{name}-gpu-metrics",
                api_version="monitoring.coreos.com/v1",
                kind="ServiceMonitor",
                metadata=ObjectMetaArgs(name=GPU_METRICS_MONITOR, namespace=settings.namespace),
                spec={
                    "namespaceSelector": {"matchNames": [source.namespace]},
                    "selector": {"matchLabels": source.selector},
                    "endpoints": [{
                        "port": source.port,
                        "interval": "15s",
                        # Not honorLabels: it gave free GPUs the exporter's own namespace and pod.
                        "honorLabels": False,
                        "relabelings": gpu_metrics_relabelings(),
                        "metricRelabelings": gpu_metrics_metric_relabelings(),
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
            spec={"groups": gpu_rule_groups(cluster.gpu_pools, device_plugin, settings.gpu_prices)},
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
