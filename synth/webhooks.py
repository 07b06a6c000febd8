"""`make webhook-ports`: the pod ports each pinned chart's webhooks and aggregated APIs are called on, from
Helm's render of every platform stack, written to core/webhook-ports.json for the GKE firewall rule."""

from __future__ import annotations

import json
import sys
from typing import Any

from core import webhooks
from core.webhooks import WEBHOOK_PORTS_FILE, chart_key
from synth import PROJECT_DIR
from synth.render import CHART_ANNOTATION, stack_rendering
from synth.stackfile import available_stacks
from versions import CHARTS


def platform_stacks() -> list[str]:
    return [stack for stack in available_stacks(PROJECT_DIR) if not stack.startswith("team-")]


def _pods_port(objects: list[dict[str, Any]], namespace: str, selector: dict[str, str], target: int | str) -> int:
    """The container port a Service's targetPort reaches: a number, or a port name in the selected pods."""
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    ports = {port["containerPort"]
             for obj in objects if obj["kind"] in ("Deployment", "DaemonSet", "StatefulSet")
             and obj["metadata"].get("namespace") == namespace
             and selector.items() <= obj["spec"]["template"]["metadata"].get("labels", {}).items()
             for container in obj["spec"]["template"]["spec"]["containers"]
             for port in container.get("ports", []) if port.get("name") == target}
    (port,) = ports
    return port


def webhook_pod_ports(objects: list[dict[str, Any]]) -> dict[str, tuple[str, int]]:
    """Every admission webhook and aggregated API the objects declare -> the chart declaring it (`<name>-<version>`)
    and the pod port the API server calls."""
    services = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objects if o["kind"] == "Service"}
    called: dict[str, tuple[str, int]] = {}
    for obj in objects:
        if obj["kind"] in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
            refs = [(f"{obj['metadata']['name']}/{hook['name']}", hook["clientConfig"].get("service"))
                    for hook in obj["webhooks"]]
        elif obj["kind"] == "APIService":
            refs = [(obj["metadata"]["name"], obj["spec"].get("service"))]
        else:
            continue
        chart = obj["metadata"].get("annotations", {}).get(CHART_ANNOTATION, "")
        for what, ref in refs:
            if not ref:
                continue  # a URL webhook, or a local APIService: nothing on the nodes
            service = services[(ref["namespace"], ref["name"])]
            (port,) = [p for p in service["spec"]["ports"] if p["port"] == ref.get("port", 443)]
            called[what] = (chart, _pods_port(objects, ref["namespace"], service["spec"]["selector"],
                                              port.get("targetPort", port["port"])))
    return called


def derived_webhook_ports() -> dict[str, list[int]]:
    """Each pinned chart -> the pod ports its webhooks are called on in any platform stack's render."""
    ports: dict[str, set[int]] = {chart_key(chart): set() for chart in CHARTS}
    for stack in platform_stacks():
        rendering = stack_rendering(stack)
        if rendering.unavailable:
            raise RuntimeError(f"stack {stack}: charts unavailable: " + "; ".join(
                f"{release}: {why}" for release, why in sorted(rendering.unavailable.items())))
        for chart, port in webhook_pod_ports(rendering.objects()).values():
            ports[chart].add(port)
    return {chart: sorted(found) for chart, found in sorted(ports.items())}


def main() -> int:
    webhooks.RECORDING = True
    WEBHOOK_PORTS_FILE.write_text(json.dumps(derived_webhook_ports(), indent=2) + "\n")
    print(f"wrote {WEBHOOK_PORTS_FILE.relative_to(PROJECT_DIR)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
