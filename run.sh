#!/usr/bin/env bash
# harmony-filter: one entry point for setting up, testing and running the proxy.
#
#   ./run.sh setup               make .venv (Python >= 3.12) and install the project into it
#   ./run.sh test [pytest args]  run the test suite
#   ./run.sh setup-clients       install the coding clients tests/test_real_clients.py drives (npm)
#   ./run.sh [serve-demo]        reverse proxy on 127.0.0.1:3307 (in front of $UPSTREAM, or of
#                                recorded gpt-oss answers when UPSTREAM is unset)
#   ./run.sh proxy               regular HTTP(S) proxy on 127.0.0.1:8080
#   ./run.sh replay FILE...      what the current code makes of recordings, beside what the
#                                upstream sent and what the client got
#   ./run.sh serve FILE...       a loopback upstream replaying recordings on 127.0.0.1:3308
#   ./run.sh record-expectations [FILE...]  write recordings' expected results from the code
#   ./run.sh bench [--load]      the benchmark against plain mitmdump (--load: 100 streams at once)
#
# Environment: PYTHON (interpreter to build .venv with), UPSTREAM (http://host:port), HOST, PORT,
# REPLAY_PORT, PACE. Arguments after a serve-demo/proxy subcommand go to mitmdump.
set -euo pipefail

cd "$(dirname "$0")"

VENV=.venv
VENV_PY="$VENV/bin/python"
STAMP="$VENV/.harmony-filter-installed"
MIN_PYTHON="3.12" # also in python_if_recent and pyproject.toml

say() { printf 'run.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

usage() {
    cat <<EOF
usage: ./run.sh [SUBCOMMAND] [ARGS...]

  setup              create .venv with Python >= $MIN_PYTHON and install harmony-filter with its dev
                     tools (idempotent: reinstalls only when pyproject.toml changed)
  test [ARGS]        run pytest (ARGS go to pytest)
  setup-clients      install the real coding clients tests/test_real_clients.py drives (OpenCode,
                     the Cline CLI, the Continue CLI; npm, about 800 MB; idempotent). test does
                     it itself when node and npm are here; without them those tests skip
  serve-demo [ARGS]  (the default) reverse proxy on \${HOST:-127.0.0.1}:\${PORT:-3307} in front of
                     \$UPSTREAM (http://host:port); without UPSTREAM, in front of a local replay of
                     the answers in recordings/ (ARGS go to mitmdump)
  proxy [ARGS]       regular HTTP(S) proxy on \${HOST:-127.0.0.1}:\${PORT:-8080} with the addon, for
                     use as the system or client proxy (ARGS go to mitmdump)
  replay FILE...     replay recordings (files or directories) through the current code and show,
                     side by side, the raw upstream response, what the client gets now and what
                     it got when recorded (exit status 1 when they differ)
  serve FILE...      a loopback upstream on \${HOST:-127.0.0.1}:\${REPLAY_PORT:-3308} that replays
                     recordings as they were chunked, at \${PACE:-recorded} pace (seconds between
                     chunks, or recorded); prints how to put the proxy in front
  record-expectations [--check] [FILE...]
                     write NAME.expected.json beside each recording (default: recordings/) where
                     it is missing or no longer met, and print what changed; --check writes nothing
  bench [ARGS]       the benchmark (bench/bench.py; installs the project's bench extra first): the
                     client direct, through plain mitmdump and through the addon on loopback;
                     tables, then bench/latest.{md,json,png}. --load: 100 concurrent streams
                     through the addon, each checked to be exactly its own (bench/load.{md,json});
                     --profile: where the addon's time goes (py-spy); --smoke: tiny sizes
  help               this text
EOF
}

# --- finding Python ---------------------------------------------------------------------------

# Prints the real executable behind $1 when $1 runs and is Python >= MIN_PYTHON; fails otherwise.
# (A pyenv shim for a version that is installed but not selected fails to run: that is a no.)
python_if_recent() {
    "$1" -c 'import sys; print(sys.executable) if sys.version_info >= (3, 12) else sys.exit(1)' \
        2>/dev/null
}

# Prints the path of a Python >= MIN_PYTHON: $PYTHON if set, then PATH (python3.13, python3.12,
# python3), then pyenv's installed versions (oldest suitable first: the one the project is tested
# with), found through `pyenv root` when pyenv is on PATH, and in ~/.pyenv in any case.
find_python() {
    if [[ -n "${PYTHON:-}" ]]; then
        python_if_recent "$PYTHON" || die "PYTHON=$PYTHON is not a Python >= $MIN_PYTHON"
        return
    fi
    local candidate
    for candidate in python3.13 python3.12 python3; do
        python_if_recent "$candidate" && return
    done
    local roots=("$HOME/.pyenv")
    if command -v pyenv >/dev/null; then
        roots=("$(pyenv root)" "${roots[@]}")
    fi
    local root
    for root in "${roots[@]}"; do
        while read -r candidate; do
            python_if_recent "$candidate" && return
        done < <(printf '%s\n' "$root"/versions/*/bin/python | sort -V)
    done
    die "no Python >= $MIN_PYTHON found (looked at \$PYTHON, python3.13, python3.12 and python3 on" \
        "PATH, and pyenv's versions). Install one, e.g. 'pyenv install 3.12' or your system's" \
        "python3.12 package (Debian/Ubuntu: apt-get install python3.12 python3.12-venv), or point" \
        "PYTHON at one: PYTHON=/path/to/python3.12 ./run.sh setup"
}

# --- setup ------------------------------------------------------------------------------------

pyproject_hash() {
    sha256sum pyproject.toml | cut -d' ' -f1
}

# Creates .venv and installs the project into it, unless that was already done for this exact
# pyproject.toml (the stamp file holds its hash).
setup() {
    if [[ -e "$VENV" ]] && ! python_if_recent "$VENV_PY" >/dev/null; then
        say "$VENV is broken or too old: recreating it"
        rm -rf "$VENV"
    fi
    if [[ ! -e "$VENV" ]]; then
        local python
        python="$(find_python)"
        say "creating $VENV with $python ($("$python" --version 2>&1))"
        "$python" -m venv "$VENV"
    fi
    install_once dev "$STAMP" "harmony-filter and its dev tools"
    # openai-harmony must find its vocabulary locally, never download it.
    TIKTOKEN_ENCODINGS_BASE="$("$VENV_PY" -m harmony_filter.harmony.vocab)"
    export TIKTOKEN_ENCODINGS_BASE
}

# setup, plus the bench extra (matplotlib, py-spy), installed on first use and again when
# pyproject.toml changes.
setup_bench() {
    setup
    install_once dev,bench "$VENV/.harmony-filter-bench-installed" \
        "the bench extra (matplotlib, py-spy)"
}

# Installs the project with the EXTRAS into .venv, unless the STAMP file says it was done for
# this exact pyproject.toml (it holds its hash).
install_once() {
    local extras="$1" stamp="$2" what="$3"
    if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$(pyproject_hash)" ]]; then
        say "installing $what into $VENV"
        "$VENV_PY" -m pip install --quiet --editable ".[$extras]"
        pyproject_hash >"$stamp"
    fi
}

CLIENTS_DIR=tests/real_clients
CLIENTS_STAMP="$CLIENTS_DIR/node_modules/.harmony-filter-installed"

# Installs the clients pinned in tests/real_clients/package-lock.json, unless that was already
# done for this exact lock file (the stamp holds its hash). `npm install --no-save` rather than
# `npm ci`: the lock lists only the platform binaries the registry had when it was made, which
# `npm ci` rejects as out of sync; install follows the lock all the same and never rewrites it.
setup_clients() {
    if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
        die "setup-clients needs node and npm (Node.js >= 20); without them the real-client" \
            "tests skip"
    fi
    local lock_hash
    lock_hash="$(sha256sum "$CLIENTS_DIR/package-lock.json" | cut -d' ' -f1)"
    if [[ -f "$CLIENTS_STAMP" && "$(cat "$CLIENTS_STAMP")" == "$lock_hash" ]]; then
        return
    fi
    say "installing the real clients into $CLIENTS_DIR/node_modules (npm, about a minute)"
    (cd "$CLIENTS_DIR" && npm install --no-save --no-audit --no-fund --loglevel=error)
    echo "$lock_hash" >"$CLIENTS_STAMP"
}

# For `./run.sh test`: the real-client tests run whenever node and npm are here. Without them, or
# when the npm registry fails, those tests skip (saying why) and the rest still runs.
setup_clients_if_possible() {
    if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
        say "no node/npm: the real-client tests will skip"
    elif ! (setup_clients); then
        say "warning: installing the real clients failed: the real-client tests will skip"
    fi
}

# --- running the proxy ------------------------------------------------------------------------

is_loopback() {
    [[ "$1" == localhost || "$1" == 127.* || "$1" == ::1 || "$1" == "[::1]" ]]
}

print_examples() {
    local base="http://127.0.0.1:$1/v1"
    cat <<EOF

Try it (streaming, model gpt-oss-20b):

  curl -N $base/chat/completions \\
    -H 'Content-Type: application/json' \\
    -d '{"model": "gpt-oss-20b", "stream": true,
         "messages": [{"role": "user", "content": "What is 2 + 2?"}]}'

  $PWD/$VENV_PY - <<'PY'
from openai import OpenAI

client = OpenAI(base_url="$base", api_key="unused-by-local-servers")
stream = client.chat.completions.create(
    model="gpt-oss-20b",
    messages=[{"role": "user", "content": "What is 2 + 2?"}],
    stream=True,
)
for chunk in stream:
    if not chunk.choices:
        continue
    delta = chunk.choices[0].delta
    reasoning = getattr(delta, "reasoning_content", None)
    if reasoning:
        print(f"\x1b[2m{reasoning}\x1b[0m", end="", flush=True)
    if delta.content:
        print(delta.content, end="", flush=True)
    for call in delta.tool_calls or []:
        print(call.model_dump(exclude_none=True), flush=True)
print()
PY

EOF
}

# Processes started in the background, and files to remove, when this script ends however it
# ends. (Bash runs a signal trap only once a foreground command is done, so serve-demo waits on
# mitmdump in the background instead: Ctrl-C or a kill then stops everything at once.)
CHILDREN=()
TEMP_FILES=()
cleanup() {
    local pid
    for pid in "${CHILDREN[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    rm -f "${TEMP_FILES[@]}"
}

start_in_background() {
    if ((${#CHILDREN[@]} == 0)); then
        trap cleanup EXIT
        trap 'exit 130' INT
        trap 'exit 143' TERM
    fi
    "$@" &
    CHILDREN+=($!)
}

# Starts the loopback replay upstream, waits for its "listening on" line and sets REPLAY_URL.
start_replay_upstream() {
    local port="${REPLAY_PORT:-3308}" log
    log="$(mktemp -t harmony-replay.XXXXXX)"
    TEMP_FILES+=("$log")
    start_in_background "$VENV_PY" -u -m harmony_filter.tools.replay_upstream --port "$port" recordings/ \
        >"$log" 2>&1
    local pid="${CHILDREN[-1]}" tenths=0
    until grep -q "listening on http://127.0.0.1:$port" "$log"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            cat "$log" >&2
            die "the replay upstream (python -m harmony_filter.tools.replay_upstream) exited"
        fi
        if ((tenths >= 150)); then
            cat "$log" >&2
            die "the replay upstream did not say it was listening within 15 s"
        fi
        sleep 0.1
        tenths=$((tenths + 1))
    done
    REPLAY_URL="http://127.0.0.1:$port"
    say "replaying recordings/ at $REPLAY_URL (no UPSTREAM set)"
}

serve_demo() {
    local host="${HOST:-127.0.0.1}" port="${PORT:-3307}" upstream="${UPSTREAM:-}"
    if [[ -z "$upstream" ]]; then
        start_replay_upstream
        upstream="$REPLAY_URL"
    fi
    is_loopback "$host" || say "warning: HOST=$host makes the proxy reachable from other machines"
    say "reverse proxy on http://$host:$port -> $upstream"
    print_examples "$port"
    start_in_background "$VENV/bin/mitmdump" -s addon/harmony.py --mode "reverse:$upstream@$port" \
        --listen-host "$host" --set flow_detail=0 "$@"
    wait "${CHILDREN[-1]}"
}

# The system (or per-client) proxy: any host reachable, only gpt-oss chat completions rewritten.
# (Beyond loopback without proxyauth, the addon itself warns that anyone can use it.)
proxy() {
    local host="${HOST:-127.0.0.1}" port="${PORT:-8080}"
    local ca="$HOME/.mitmproxy/mitmproxy-ca-cert.pem"
    local url="http://$host:$port"
    [[ "$host" == 0.0.0.0 || "$host" == "::" ]] && url="http://127.0.0.1:$port"
    say "HTTP(S) proxy on $host:$port: gpt-oss chat completions are rewritten, all else passes"
    cat <<EOF

Point clients at it, and have them trust its CA (made on the first run):

  CA=$ca
  export HTTPS_PROXY=$url HTTP_PROXY=$url
  export SSL_CERT_FILE=\$CA REQUESTS_CA_BUNDLE=\$CA   # Python: httpx and openai, requests
  export NODE_EXTRA_CA_CERTS=\$CA                    # Node (VS Code: see the README)
  curl --proxy $url --cacert "\$CA" https://HOST/v1/models

EOF
    exec "$VENV/bin/mitmdump" -s addon/harmony.py --listen-host "$host" --listen-port "$port" \
        --set flow_detail=0 "$@"
}

# A loopback upstream that sends recorded responses as they were chunked (and paced), so the live
# streaming path runs against a recording.
serve() {
    (($#)) || die "usage: ./run.sh serve FILE|DIR... (recordings to replay)"
    local host="${HOST:-127.0.0.1}"
    is_loopback "$host" || say "warning: HOST=$host makes the replay reachable from other machines"
    exec "$VENV_PY" -u -m harmony_filter.tools.replay_upstream --host "$host" \
        --port "${REPLAY_PORT:-3308}" --pace "${PACE:-recorded}" --guide "$@"
}

# --- main -------------------------------------------------------------------------------------

subcommand="${1:-serve-demo}"
shift || true
case "$subcommand" in
    setup) setup ;;
    # (setup is never part of an && list: errexit does not apply inside one)
    test) setup; setup_clients_if_possible; "$VENV_PY" -m pytest "$@" ;;
    setup-clients) setup_clients ;;
    serve-demo) setup; serve_demo "$@" ;;
    proxy) setup; proxy "$@" ;;
    replay) setup; "$VENV_PY" -m harmony_filter.tools.viewer "$@" ;;
    serve) setup; serve "$@" ;;
    record-expectations) setup; "$VENV_PY" -m harmony_filter.tools.expectations "$@" ;;
    bench) setup_bench; "$VENV_PY" bench/bench.py "$@" ;;
    help | -h | --help) usage ;;
    *)
        usage >&2
        exit 2
        ;;
esac
