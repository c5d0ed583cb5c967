#!/usr/bin/env bash
# Installs or builds what the comparison servers need, pinned or from Debian:
#   node    `ws` from the npm registry into node/node_modules (package.json +
#           package-lock.json)
#   python  Python's `websockets` into the venv python/.venv (requirements.txt)
#   go      go/server, built from go/server.go with Debian's golang-go and
#           golang-github-gorilla-websocket-dev, in GOPATH mode (no Go module
#           proxy needed)
#
#   bash setup.sh                 all three
#   bash setup.sh node go         some of them
#
# Idempotent: when everything is already there it checks and returns in about
# a second. For each server it prints one line: what it has, or on failure
# why (on stderr); it exits non-zero if any failed. The installers' full
# output is in setup-NAME.log beside this script, kept on failure.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# Prints why a server cannot be set up, and fails its setup.
fail() {
    echo "benches/compare/setup.sh: $*" >&2
    return 1
}

# The most telling line of an installer's output in a log, for the reason.
why_npm() {
    grep -E '^npm (error|ERR!)' "$1" | grep -vE ' (code|syscall|errno) |complete log' |
        head -n 1 | sed -E 's/^npm (error|ERR!) //' || true
}
why_pip() {
    grep -E '^ERROR|Error' "$1" | tail -n 1 || true
}
why_go() {
    grep -vE '^#' "$1" | head -n 1 || true
}

setup_node() {
    local log="$here/setup-node.log"
    command -v node >/dev/null || fail "node is not installed (the Node server needs Node 20 or later)" || return
    command -v npm >/dev/null || fail "npm is not installed (it comes with Node)" || return
    cd "$here/node" || return
    local want have
    want="$(node -p 'require("./package.json").dependencies.ws')"
    have="$(node -p 'require("./node_modules/ws/package.json").version' 2>/dev/null)"
    if [[ "$have" != "$want" ]]; then
        npm ci --no-audit --no-fund >"$log" 2>&1 ||
            fail "cannot install ws $want from the npm registry: $(why_npm "$log")" || return
        have="$(node -p 'require("./node_modules/ws/package.json").version')"
        [[ "$have" == "$want" ]] || fail "npm installed ws $have, not the pinned $want" || return
    fi
    rm -f "$log"
    echo "ws $have (node $(node --version))"
}

setup_python() {
    local log="$here/setup-python.log"
    command -v python3 >/dev/null ||
        fail "python3 is not installed (the Python server needs 3.11 or later)" || return
    cd "$here/python" || return
    local want have py=.venv/bin/python
    want="$(sed -n 's/^websockets==//p' requirements.txt)"
    have="$("$py" -c 'import websockets; print(websockets.__version__)' 2>/dev/null)"
    if [[ "$have" != "$want" ]]; then
        python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
            fail "python3 is $(python3 -V 2>&1); websockets $want needs 3.11 or later" || return
        if [[ ! -x "$py" ]]; then
            python3 -m venv .venv >"$log" 2>&1 ||
                fail "cannot create a venv in python/.venv: $(why_pip "$log")" \
                    "(on Debian: apt-get install python3-venv)" || return
        fi
        "$py" -m pip install --quiet --disable-pip-version-check -r requirements.txt >"$log" 2>&1 ||
            fail "cannot install websockets $want from PyPI: $(why_pip "$log")" || return
        have="$("$py" -c 'import websockets; print(websockets.__version__)')"
        [[ "$have" == "$want" ]] || fail "pip installed websockets $have, not the pinned $want" || return
    fi
    rm -f "$log"
    echo "websockets $have ($("$py" -V))"
}

setup_go() {
    local log="$here/setup-go.log"
    local packages="golang-go golang-github-gorilla-websocket-dev"
    command -v go >/dev/null ||
        fail "go is not installed (on Debian: apt-get install $packages)" || return
    # GOPATH mode, on the packages Debian installs under /usr/share/gocode.
    local gopath=/usr/share/gocode
    [[ -f "$gopath/src/github.com/gorilla/websocket/conn.go" ]] ||
        fail "gorilla/websocket is not in $gopath/src" \
            "(on Debian: apt-get install golang-github-gorilla-websocket-dev)" || return
    # go needs a build cache; where HOME is unset it has no default.
    if [[ -z "${GOCACHE:-}${XDG_CACHE_HOME:-}${HOME:-}" ]]; then
        export GOCACHE="$here/go/.cache"
    fi
    cd "$here/go" || return
    # Quick when nothing changed: go build checks its cache and the binary.
    GO111MODULE=off GOPATH="$gopath" go build -o server . >"$log" 2>&1 ||
        fail "cannot build go/server.go: $(why_go "$log")" || return
    rm -f "$log"
    local gorilla
    gorilla="$(dpkg-query -W -f '${Version}' golang-github-gorilla-websocket-dev 2>/dev/null)"
    echo "gorilla/websocket ${gorilla:-(version unknown)} ($(go version | cut -d' ' -f3))"
}

servers=("$@")
[[ ${#servers[@]} -gt 0 ]] || servers=(node python go)
failed=0
for server in "${servers[@]}"; do
    case "$server" in
        node | python | go) (setup_"$server") || failed=1 ;;
        *)
            echo "usage: bash benches/compare/setup.sh [node] [python] [go]" >&2
            exit 2
            ;;
    esac
done
exit "$failed"
