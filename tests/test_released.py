"""verify.released: a destroy waits until the cluster has deleted the disks of its volumes."""

from __future__ import annotations

from typing import Any

from verify.released import deleted_with_the_cluster, wait_released


def volume(name: str, policy: str, claim: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"persistentVolumeReclaimPolicy": policy}
    if claim:
        namespace, claim_name = claim.split("/")
        spec["claimRef"] = {"namespace": namespace, "name": claim_name}
    return {"metadata": {"name": name}, "spec": spec, "status": {"phase": "Released"}}


class Volumes:
    """The API server's PersistentVolumes, one list per request, as the CSI driver deletes them."""

    def __init__(self, *lists: list[dict[str, Any]]) -> None:
        self.lists = list(lists)
        self.paths: list[str] = []

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        self.paths.append(f"{method} {path}")
        return {"items": self.lists.pop(0) if len(self.lists) > 1 else self.lists[0]}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_wait_ends_once_every_volume_the_cluster_deletes_is_gone():
    prometheus = volume("pvc-1", "Delete", "monitoring/prometheus-db-0")
    kept = volume("pv-static", "Retain")  # the cluster never deletes it: nothing to wait for
    api, clock = Volumes([prometheus, kept], [prometheus, kept], [kept]), Clock()
    assert wait_released(api, timeout=60, poll=5, clock=clock, sleep=clock.sleep) == []
    assert api.paths == ["GET /api/v1/persistentvolumes"] * 3 and clock.now == 10


def test_the_wait_names_the_volumes_left_when_it_runs_out():
    api, clock = Volumes([volume("pvc-2", "Delete", "research/data")]), Clock()
    assert wait_released(api, timeout=30, poll=10, clock=clock, sleep=clock.sleep) == [
        "pvc-2 (claim research/data, Released)"]
    assert clock.now == 30


def test_only_volumes_with_the_delete_policy_are_the_clusters_to_delete():
    api = Volumes([volume("a", "Delete", "x/y"), volume("b", "Retain", "x/z")])
    assert deleted_with_the_cluster(api) == ["a (claim x/y, Released)"]
