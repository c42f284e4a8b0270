"""Test-wide fixtures come from the plugin modules under tests/fixtures (one per area)."""

from __future__ import annotations

import pytest

pytest_plugins = [
    "tests.fixtures.kafka",
    "tests.fixtures.sandbox",
]

# Folders whose tests share one expensive session resource: under ``make test`` (pytest-xdist,
# ``--dist loadgroup``) each folder runs on a single worker, so the resource starts once.
SHARED_SESSION = {
    "cluster": "the secured three-broker cluster (tests/cluster/conftest.py)",
    "interop": "the SDK probes (tests/interop/conftest.py)",
}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = item.path.parts
        for folder in SHARED_SESSION:
            if folder in parts and parts[parts.index(folder) - 1] == "tests":
                item.add_marker(pytest.mark.xdist_group(folder))
