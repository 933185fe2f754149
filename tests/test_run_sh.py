"""run.sh's own logic, run for real against stand-in interpreters (fast: nothing is installed).

Each test copies run.sh into a temporary project whose PATH holds only the few tools run.sh
uses, plus shell-script stand-ins for Python, pyenv and mitmdump that log how they were called.
"""

import shutil
import subprocess
import time
from pathlib import Path

import pytest

RUN_SH = Path(__file__).parent.parent / "run.sh"
TOOLS = "bash dirname sort sha256sum cut cat mktemp grep sleep rm".split()

SUITABLE_PYTHON = """#!/bin/sh
echo "python $*" >>"$CALLS"
case "$1" in
    -c) echo "$0" ;;  # run.sh's version check: a suitable Python prints its executable
    --version) echo "Python 3.12.99" ;;
    -m) case "$2" in
        pip) ;;
        harmony_filter.harmony.vocab) echo "$HOME/vocab" ;;
        venv) echo "venv made by $0" >&2; exit 3 ;;  # stop here: nothing real is built
        esac ;;
    -u) echo $$ >"$CALLS.replay-pid"; echo "listening on http://127.0.0.1:$5"; exec sleep 60 ;;
esac
"""
OLD_PYTHON = "#!/bin/sh\nexit 1\n"  # what a Python < 3.12 answers to the version check
PYENV_SHIM = "#!/bin/sh\necho 'pyenv: python3.13: command not found' >&2\nexit 127\n"
MITMDUMP = '#!/bin/sh\necho "mitmdump $*" >>"$CALLS"\n'


class Sandbox:
    def __init__(self, root: Path) -> None:
        self.project = root / "project"
        self.bin = root / "bin"
        self.home = root / "home"
        self.calls = root / "calls.log"
        for directory in (self.project, self.bin, self.home):
            directory.mkdir()
        shutil.copy(RUN_SH, self.project / "run.sh")
        (self.project / "pyproject.toml").write_text('[project]\nname = "x"\n')
        for tool in TOOLS:
            found = shutil.which(tool)
            assert found, tool
            (self.bin / tool).symlink_to(found)
        self.calls.touch()

    def script(self, path: Path, text: str) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o755)
        return path

    def fake_venv(self) -> None:
        self.script(self.project / ".venv/bin/python", SUITABLE_PYTHON)
        self.script(self.project / ".venv/bin/mitmdump", MITMDUMP)

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        base = {"PATH": str(self.bin), "HOME": str(self.home), "CALLS": str(self.calls)}
        return subprocess.run(
            [str(self.project / "run.sh"), *args],
            env=base | env,
            capture_output=True,
            text=True,
            timeout=30,
        )

    def logged(self) -> list[str]:
        return self.calls.read_text().splitlines()

    def mitmdump_runs(self) -> list[str]:
        return [line for line in self.logged() if line.startswith("mitmdump ")]


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path)


def test_an_unknown_subcommand_prints_the_usage(sandbox: Sandbox) -> None:
    result = sandbox.run("frobnicate")

    assert result.returncode == 2
    for subcommand in ("setup", "test", "serve-demo", "proxy"):
        assert f"\n  {subcommand}" in result.stderr


# -- finding Python ---------------------------------------------------------------------------


def chosen_python(result: subprocess.CompletedProcess[str]) -> str:
    assert "venv made by" in result.stderr, result.stderr
    line = next(line for line in result.stderr.splitlines() if "creating .venv with" in line)
    return line.split("creating .venv with ")[1].split(" (")[0]


def test_a_suitable_python_on_path_comes_first(sandbox: Sandbox) -> None:
    sandbox.script(sandbox.bin / "python3.13", PYENV_SHIM)
    sandbox.script(sandbox.bin / "python3.12", SUITABLE_PYTHON)
    sandbox.script(sandbox.home / ".pyenv/versions/3.13.99/bin/python", SUITABLE_PYTHON)

    assert chosen_python(sandbox.run("setup")) == str(sandbox.bin / "python3.12")


@pytest.mark.parametrize("found_through", ["~/.pyenv", "pyenv root"])
def test_pyenv_versions_are_tried_oldest_suitable_first(
    sandbox: Sandbox, found_through: str
) -> None:
    sandbox.script(sandbox.bin / "python3.13", PYENV_SHIM)
    sandbox.script(sandbox.bin / "python3", OLD_PYTHON)
    root = sandbox.home / ".pyenv"
    if found_through == "pyenv root":
        root = sandbox.home / "elsewhere"
        sandbox.script(sandbox.bin / "pyenv", f"#!/bin/sh\necho {root}\n")
    sandbox.script(root / "versions/3.11.9/bin/python", OLD_PYTHON)
    sandbox.script(root / "versions/3.12.99/bin/python", SUITABLE_PYTHON)
    sandbox.script(root / "versions/3.13.99/bin/python", SUITABLE_PYTHON)

    assert chosen_python(sandbox.run("setup")) == str(root / "versions/3.12.99/bin/python")


def test_without_a_suitable_python_it_says_what_to_install(sandbox: Sandbox) -> None:
    sandbox.script(sandbox.bin / "python3", OLD_PYTHON)
    sandbox.script(sandbox.home / ".pyenv/versions/3.11.9/bin/python", OLD_PYTHON)

    result = sandbox.run("setup")

    assert result.returncode == 1
    assert "no Python >= 3.12 found" in result.stderr
    assert "pyenv install 3.12" in result.stderr
    assert "PYTHON=/path/to/python3.12 ./run.sh setup" in result.stderr
    assert not (sandbox.project / ".venv").exists()


def test_python_names_the_interpreter(sandbox: Sandbox) -> None:
    chosen = sandbox.script(sandbox.home / "my/python", SUITABLE_PYTHON)
    sandbox.script(sandbox.bin / "python3.12", SUITABLE_PYTHON)

    assert chosen_python(sandbox.run("setup", PYTHON=str(chosen))) == str(chosen)
    assert sandbox.run("setup", PYTHON=str(sandbox.bin / "python3")).returncode == 1


# -- setup ------------------------------------------------------------------------------------


def pip_installs(sandbox: Sandbox) -> int:
    return sum(line.startswith("python -m pip install") for line in sandbox.logged())


def test_setup_installs_again_only_when_pyproject_changes(sandbox: Sandbox) -> None:
    sandbox.fake_venv()

    for _ in range(2):
        assert sandbox.run("setup").returncode == 0
    assert pip_installs(sandbox) == 1
    assert "python -m pip install --quiet --editable .[dev]" in sandbox.logged()

    with (sandbox.project / "pyproject.toml").open("a") as pyproject:
        pyproject.write("version = '2'\n")
    assert sandbox.run("setup").returncode == 0
    assert pip_installs(sandbox) == 2
    assert sandbox.logged().count("python -m harmony_filter.harmony.vocab") == 3


def test_a_failed_install_is_retried(sandbox: Sandbox) -> None:
    sandbox.fake_venv()
    python = sandbox.project / ".venv/bin/python"
    working = python.read_text()
    sandbox.script(python, working.replace("pip) ;;", "pip) exit 1 ;;"))
    assert sandbox.run("setup").returncode != 0

    sandbox.script(python, working)
    assert sandbox.run("setup").returncode == 0
    assert pip_installs(sandbox) == 2


# -- running the proxy ------------------------------------------------------------------------


def running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_serve_demo_puts_a_reverse_proxy_before_upstream(sandbox: Sandbox) -> None:
    sandbox.fake_venv()

    result = sandbox.run("serve-demo", "--set", "x=1", UPSTREAM="http://127.0.0.1:9999")

    assert result.returncode == 0, result.stderr
    assert sandbox.mitmdump_runs() == [
        "mitmdump -s addon/harmony.py --mode reverse:http://127.0.0.1:9999@3307 "
        "--listen-host 127.0.0.1 --set flow_detail=0 --set x=1"
    ]
    assert "curl -N http://127.0.0.1:3307/v1/chat/completions" in result.stdout
    assert 'OpenAI(base_url="http://127.0.0.1:3307/v1"' in result.stdout
    assert '"stream": true' in result.stdout and "gpt-oss-20b" in result.stdout


def test_serve_demo_without_upstream_replays_recordings_and_stops_the_replay(
    sandbox: Sandbox,
) -> None:
    sandbox.fake_venv()

    result = sandbox.run(REPLAY_PORT="4411", PORT="4410")  # no subcommand: serve-demo

    assert result.returncode == 0, result.stderr
    assert "python -u -m harmony_filter.tools.replay_upstream --port 4411 recordings/" in (
        sandbox.logged()
    )
    assert sandbox.mitmdump_runs() == [
        "mitmdump -s addon/harmony.py --mode reverse:http://127.0.0.1:4411@4410 "
        "--listen-host 127.0.0.1 --set flow_detail=0"
    ]
    replay_pid = int(Path(f"{sandbox.calls}.replay-pid").read_text())
    deadline = time.monotonic() + 5
    while running(replay_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running(replay_pid)


def test_proxy_listens_on_loopback_unless_told_otherwise(sandbox: Sandbox) -> None:
    """(Beyond loopback without proxyauth the addon warns: tests/test_system_proxy.py.)"""
    sandbox.fake_venv()

    sandbox.run("proxy")
    sandbox.run("proxy", HOST="0.0.0.0")

    assert sandbox.mitmdump_runs() == [
        "mitmdump -s addon/harmony.py --listen-host 127.0.0.1 --listen-port 8080 "
        "--set flow_detail=0",
        "mitmdump -s addon/harmony.py --listen-host 0.0.0.0 --listen-port 8080 --set flow_detail=0",
    ]
