"""`make e2e`: one loopback cluster and one platform stack for the whole run; the test files run in the order of
their names (up first, destroy last), as the lifecycle does."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from e2e.cluster import exit_on_sigterm
from e2e.lifecycle import Platform, platform


@pytest.fixture(scope="session")
def e2e() -> Iterator[Platform]:
    exit_on_sigterm()  # a CI timeout's SIGTERM still stops the cluster and deletes its network namespace
    with platform() as running:
        yield running
