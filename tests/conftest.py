"""Shared test settings: an isolated data cache, hypothesis profiles, the ``slow`` marker."""

from __future__ import annotations

import os
import tempfile

import pytest
from hypothesis import settings

os.environ["SEQVAE_CACHE"] = tempfile.mkdtemp(prefix="seqvae-test-cache-")
os.environ.pop(("SEQVAE_DISABLE_PLUGIN_AUTOLOAD"), None)

settings.register_profile("dev", max_examples=30, deadline=None)
settings.register_profile("ci", max_examples=60, deadline=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


SLOW_TIMEOUT = 1200  # seconds: the end-to-end runs take up to a few minutes on 2 busy cores


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    runslow = config.getoption("--runslow")
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" not in item.keywords:
            continue
        if not runslow:
            item.add_marker(skip)
        elif item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT))


@pytest.fixture
def fresh_registries():
    """Re-read entry points before and after a test that changes sys.path."""
    from seqvae.registry import refresh

    refresh()
    yield
    refresh()
