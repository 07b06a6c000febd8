"""The pod ports the API server calls admission webhooks and aggregated APIs on, per chart at its pin.

A private cluster's control plane reaches nodes only on the ports a firewall opens (GKE opens 443 and 10250),
so a cluster behind such a firewall (GKE's) opens these. They are not kept by hand: `make webhook-ports`
writes `webhook-ports.json` from Helm's render of every platform stack's charts (synth/webhooks.py follows each
rendered webhook configuration and APIService through its Service to the pod port), and a test fails when the
file and the charts at their pins disagree. The file is read here, where no chart is at hand (a real `pulumi up`).
"""

from __future__ import annotations

import json
from pathlib import Path

from versions import CHARTS, Chart

WEBHOOK_PORTS_FILE = Path(__file__).parent / "webhook-ports.json"
# Set by `make webhook-ports` while it synthesizes the stacks it renders: the file is what it is rewriting, so a
# chart pin it lacks must not stop the very command the error below names.
RECORDING = False


def chart_key(chart: Chart) -> str:
    return f"{chart.name}-{chart.version}"


def webhook_ports() -> list[str]:
    """Every port a chart the platform pins serves a webhook or aggregated API on, for the firewall rule."""
    recorded: dict[str, list[int]] = json.loads(WEBHOOK_PORTS_FILE.read_text())
    missing = [chart_key(chart) for chart in CHARTS if chart_key(chart) not in recorded]
    if missing and not RECORDING:
        raise RuntimeError(f"{WEBHOOK_PORTS_FILE} has no webhook ports for {', '.join(missing)} (a chart pin "
                           "changed): run `make webhook-ports` where the charts are, and commit the file")
    return [str(port) for port in sorted({port for chart in CHARTS for port in recorded.get(chart_key(chart), [])})]
