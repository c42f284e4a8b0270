"""Test-wide fixtures come from the plugin modules under tests/fixtures (one per area)."""

pytest_plugins = [
    "tests.fixtures.kafka",
    "tests.fixtures.sandbox",
]
