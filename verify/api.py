"""The Kubernetes API as `make verify` uses it: JSON requests by path, nothing else.

`HttpApi` talks to a real API server with a kubeconfig whose user runs a credential plugin (the platform's
kubeconfigs: `aws eks get-token`, `gke-gcloud-auth-plugin`), or, for an `existing` cluster's own kubeconfig, has
a token or a client certificate; tests give the same calls recorded responses.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any, Protocol

import yaml


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class Unreachable(Exception):
    """No answer from the API at all: refused, reset or timed out, or no credentials to ask with. Said in one
    line, as an HTTP error is, never a traceback."""


class Api(Protocol):
    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """The response's JSON (or text, for logs); ApiError on an HTTP error status."""
        ...


class HttpApi:
    """Plain HTTPS to the API server of the kubeconfig's current context."""

    def __init__(self, kubeconfig: dict[str, Any]) -> None:
        context_name = kubeconfig["current-context"]
        context = next(c["context"] for c in kubeconfig["contexts"] if c["name"] == context_name)
        cluster = next(c["cluster"] for c in kubeconfig["clusters"] if c["name"] == context["cluster"])
        self._user = next(u["user"] for u in kubeconfig["users"] if u["name"] == context["user"])
        self._cluster = cluster
        self._server = cluster["server"].rstrip("/")
        self._tls = ssl.create_default_context()
        if "certificate-authority-data" in cluster:
            # Without it (GKE's DNS endpoint) the server's certificate is a public CA's.
            self._tls.load_verify_locations(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
        self._token: tuple[str, float] | None = None
        if "token" in self._user:
            self._token = (self._user["token"], float("inf"))
        if "client-certificate-data" in self._user:
            self._load_client_certificate()

    def _load_client_certificate(self) -> None:
        # ssl reads a certificate chain only from files: a private folder, gone once it is loaded.
        with tempfile.TemporaryDirectory() as folder:
            cert, key = os.path.join(folder, "client.crt"), os.path.join(folder, "client.key")
            for path, name in ((cert, "client-certificate-data"), (key, "client-key-data")):
                with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as out:
                    out.write(base64.b64decode(self._user[name]))
            self._tls.load_cert_chain(cert, key)

    def _headers(self) -> dict[str, str]:
        if "exec" in self._user or "token" in self._user:
            return {"Authorization": f"Bearer {self._bearer()}"}
        return {}  # the client certificate authenticates

    def _bearer(self) -> str:
        if self._token and self._token[1] > time.time() + 60:
            return self._token[0]
        plugin = self._user["exec"]
        env = {**os.environ, **{e["name"]: e["value"] for e in plugin.get("env") or []}}
        if plugin.get("provideClusterInfo"):
            # What client-go hands such a plugin (gke-gcloud-auth-plugin reads it).
            cluster = {"server": self._server} | {key: value for key, value in self._cluster.items()
                                                   if key == "certificate-authority-data"}
            env["KUBERNETES_EXEC_INFO"] = json.dumps({"apiVersion": plugin["apiVersion"], "kind": "ExecCredential",
                                                      "spec": {"interactive": False, "cluster": cluster}})
        try:
            result = subprocess.run([plugin["command"], *plugin.get("args", [])], env=env, capture_output=True,
                                    text=True, check=True)
        except FileNotFoundError:
            raise Unreachable(f"the kubeconfig's credential plugin {plugin['command']!r} is not on PATH: install it "
                              "(the AWS CLI for EKS, gke-gcloud-auth-plugin for GKE)") from None
        except subprocess.CalledProcessError as exc:
            raise Unreachable(f"the kubeconfig's credential plugin {plugin['command']!r} failed: "
                              f"{(exc.stderr or '').strip()[:300] or f'exit {exc.returncode}'}") from None
        status = json.loads(result.stdout)["status"]
        expiry = status.get("expirationTimestamp")
        expires = datetime.fromisoformat(expiry.replace("Z", "+00:00")).timestamp() if expiry else time.time() + 300
        self._token = (status["token"], expires)
        return status["token"]

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self._server}{path}", data=data, method=method, headers={
            **self._headers(), "Accept": "application/json",
            **({"Content-Type": "application/json"} if data else {})})
        try:
            with urllib.request.urlopen(request, context=self._tls, timeout=60) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as exc:
            raise ApiError(exc.code, exc.read().decode(errors="replace")[:500]) from None
        except urllib.error.URLError as exc:  # refused, unresolvable, TLS: what urlopen wraps
            raise Unreachable(f"{method} {self._server}{path}: {exc.reason}") from None
        except (OSError, http.client.HTTPException) as exc:  # reset, timed out or cut off while reading
            raise Unreachable(f"{method} {self._server}{path}: {exc or type(exc).__name__}") from None
        try:
            return json.loads(text)
        except ValueError:
            return text


def load_kubeconfig(text: str) -> dict[str, Any]:
    return yaml.safe_load(text)


class RecordingApi:
    """Another Api, with every exchange kept: `python -m verify --record` saves them for the tests to replay."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.exchanges: list[dict[str, Any]] = []

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            response = self.api.request(method, path, body)
        except ApiError as exc:
            self.exchanges.append({"method": method, "path": path, "status": exc.status, "body": str(exc)})
            raise
        self.exchanges.append({"method": method, "path": path, "status": 200, "body": response})
        return response
