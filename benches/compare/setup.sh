#!/usr/bin/env bash
# Installs what the comparison servers need, pinned: `ws` from the npm registry
# into node/node_modules (package.json + package-lock.json) and Python's
# `websockets` into the venv python/.venv (requirements.txt). Idempotent: when
# the pinned versions are already there it checks and returns in well under a
# second. On failure it prints one line saying why and exits non-zero; the
# installers' full output is in setup.log beside this script.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log="$here/setup.log"

fail() {
    echo "benches/compare/setup.sh: $*" >&2
    exit 1
}

# The most telling line of an installer's output in the log, for the reason.
why_npm() {
    grep -E '^npm (error|ERR!)' "$log" | grep -vE ' (code|syscall|errno) |complete log' |
        head -n 1 | sed -E 's/^npm (error|ERR!) //' || true
}
why_pip() {
    grep -E '^ERROR|Error' "$log" | tail -n 1 || true
}

command -v node >/dev/null || fail "node is not installed (the Node server needs Node 20 or later)"
command -v npm >/dev/null || fail "npm is not installed (it comes with Node)"
command -v python3 >/dev/null || fail "python3 is not installed (the Python server needs 3.11 or later)"

# ---- Node: ws ----
cd "$here/node"
want_ws="$(node -p 'require("./package.json").dependencies.ws')"
have_ws="$(node -p 'require("./node_modules/ws/package.json").version' 2>/dev/null || true)"
if [[ "$have_ws" != "$want_ws" ]]; then
    npm ci --no-audit --no-fund >"$log" 2>&1 ||
        fail "cannot install ws $want_ws from the npm registry: $(why_npm)"
    have_ws="$(node -p 'require("./node_modules/ws/package.json").version')"
    [[ "$have_ws" == "$want_ws" ]] || fail "npm installed ws $have_ws, not the pinned $want_ws"
fi

# ---- Python: websockets ----
cd "$here/python"
want_py="$(sed -n 's/^websockets==//p' requirements.txt)"
py=.venv/bin/python
have_py="$("$py" -c 'import websockets; print(websockets.__version__)' 2>/dev/null || true)"
if [[ "$have_py" != "$want_py" ]]; then
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        fail "python3 is $(python3 -V 2>&1); websockets $want_py needs 3.11 or later"
    if [[ ! -x "$py" ]]; then
        python3 -m venv .venv >"$log" 2>&1 ||
            fail "cannot create a venv in python/.venv: $(why_pip) (on Debian: apt-get install python3-venv)"
    fi
    "$py" -m pip install --quiet --disable-pip-version-check -r requirements.txt >"$log" 2>&1 ||
        fail "cannot install websockets $want_py from PyPI: $(why_pip)"
    have_py="$("$py" -c 'import websockets; print(websockets.__version__)')"
    [[ "$have_py" == "$want_py" ]] || fail "pip installed websockets $have_py, not the pinned $want_py"
fi

rm -f "$log"
echo "ws $have_ws (node $(node --version)), websockets $have_py ($("$py" -V))"
