"""Shared test setup: openai-harmony's vocabulary comes from the local cache, never the network."""

import socket
from collections.abc import Callable
from collections.abc import Iterator

import pytest
from faulty_upstream import FaultyUpstream
from faulty_upstream import faulty_upstream
from state_probe import ProbedProxy
from state_probe import probed_mitmdump

from harmony_filter.harmony.vocab import ensure_vocab

# Before any test module loads a Harmony encoding (some do at import time).
ensure_vocab()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def free_port() -> Callable[[], int]:
    """A function that returns a TCP port on 127.0.0.1 that was free a moment ago."""
    return _free_port


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, FaultyUpstream]]:
    """The fault-injecting upstream (faulty_upstream.py), one per test module: its URL and it."""
    with faulty_upstream() as served:
        yield served


@pytest.fixture(scope="module")
def proxy(
    upstream: tuple[str, FaultyUpstream], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProbedProxy]:
    """mitmdump with the addon in front of `upstream`, its state open to the test (state_probe)."""
    with probed_mitmdump(upstream[0], tmp_path_factory.mktemp("confdir")) as proxy:
        yield proxy
