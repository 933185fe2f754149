"""Shared test setup: openai-harmony's vocabulary comes from the local cache, never the network."""

import socket
from collections.abc import Callable

import pytest

from harmony_filter.vocab import ensure_vocab

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
