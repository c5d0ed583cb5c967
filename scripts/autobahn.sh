#!/usr/bin/env bash
# The Autobahn|Testsuite, the conformance suite for RFC 6455, against this
# project's own examples (chapter 7, "Conformance"):
#
# - server: echo_server on a free loopback port, driven by the suite's
#   fuzzingclient;
# - client: examples/autobahn_client.rs, driven by the suite's fuzzingserver
#   on a free loopback port.
#
# Every case runs except 12.* and 13.* (permessage-deflate, which tungstenite
# does not implement). For each side it prints the verdicts' counts, the
# cases that are not OK, and where the HTML report is, and it exits non-zero
# on any FAILED case, a missing report, too few cases, or a program that
# crashed or did not exit 0 on Ctrl-C.
#
#   scripts/autobahn.sh            # both sides
#   scripts/autobahn.sh server     # or only one
#
# The suite is Python 2 only. The first run makes a Python 2 virtual
# environment from a Python 2.7 interpreter (pyenv's, or the one in
# $AUTOBAHN_PYTHON2) and installs the pinned versions below from PyPI into
# ${XDG_CACHE_HOME:-~/.cache}/websocket-tutorial/autobahn, outside the
# repository; later runs reuse it while the pins are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

# `pip install autobahntestsuite` with today's dependencies fails on Python
# 2, and Automat unpinned resolves to a Python-3-only wheel: this set, every
# package the suite needs with its version, installs and runs.
SUITE=(
    autobahntestsuite==0.8.2 autobahn==0.10.9 Twisted==19.10.0 txaio==2.1.0
    zope.interface==4.6.0 Automat==20.2.0 attrs==21.4.0 constantly==15.1.0
    incremental==16.10.1 hyperlink==21.0.0 idna==2.10 typing==3.10.0.0
    PyHamcrest==1.10.1 six==1.16.0 setuptools==44.0.0 pyOpenSSL==19.1.0
    cryptography==3.3.2 cffi==1.15.1 pycparser==2.21 enum34==1.1.10
    ipaddress==1.0.23 Jinja2==2.11.3 MarkupSafe==1.1.1 klein==20.6.0
    Werkzeug==1.0.1 Tubes==0.2.1 pyasn1==0.5.1 pyasn1-modules==0.3.0
    service-identity==21.1.0 unittest2==1.1.0 traceback2==1.4.0
    linecache2==1.0.0
)
# The last virtualenv that can still make a Python 2 environment.
VIRTUALENV=virtualenv==20.21.1
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/websocket-tutorial/autobahn"
REPORTS=target/autobahn
# Cases outside 12.* and 13.* in autobahntestsuite 0.8.2: a run with fewer
# did not run them all.
EXPECTED_CASES=301
# Deadlines, so that a hang fails instead of stalling CI: a whole side of
# the suite (about a minute on 2 cores), a server's first line, the
# suite's port opening, and a server's exit after Ctrl-C.
RUN_TIMEOUT=900
START_TIMEOUT=30
EXIT_TIMEOUT=10

say() { echo "autobahn: $*"; }
die() {
    echo "autobahn: error: $*" >&2
    exit 1
}

case "${1:-both}" in
    both) SIDES=(server client) ;;
    server | client) SIDES=("$1") ;;
    *) die "usage: scripts/autobahn.sh [server|client]" ;;
esac

# What this script started is stopped, by process id, whatever way it
# ends: the sides run in subshells of their own (below), so each writes the
# ids of what it starts to a file.
WORK="$(mktemp -d)"
SIDE_PIDS=()
started() { echo "$1" >>"$WORK/pids"; }
cleanup() {
    local pid
    for pid in "${SIDE_PIDS[@]}" $(cat "$WORK/pids" 2>/dev/null); do
        kill -TERM "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

# A Python 2.7 interpreter: $AUTOBAHN_PYTHON2, pyenv's, or one on PATH.
find_python2() {
    local root candidate
    root="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"
    for candidate in ${AUTOBAHN_PYTHON2:+"$AUTOBAHN_PYTHON2"} "$root"/versions/2.7*/bin/python \
        python2.7 python2; do
        # A pyenv shim exists even when it has no 2.7 to run: ask it.
        if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (2, 7))' 2>/dev/null; then
            command -v "$candidate"
            return
        fi
    done
    die "the Autobahn|Testsuite needs Python 2.7, and none was found
  (tried \$AUTOBAHN_PYTHON2, $root/versions/2.7*/bin/python, python2.7, python2);
  install one, for example with \`pyenv install 2.7.18\`, or set AUTOBAHN_PYTHON2"
}

# Makes the suite's virtual environment, unless the one there was made from
# the same interpreter and pins.
install_suite() {
    local python2 wanted
    python2="$(find_python2)"
    wanted="$(printf '%s\n' "$python2" "$VIRTUALENV" "${SUITE[@]}")"
    if [ -x "$CACHE/py2/bin/wstest" ] && [ "$(cat "$CACHE/installed" 2>/dev/null)" = "$wanted" ]; then
        return
    fi
    say "installing the suite into $CACHE (once)"
    rm -rf "$CACHE"
    mkdir -p "$CACHE"
    # virtualenv, in a Python 3 environment of its own, makes the Python 2 one.
    python3 -m venv "$CACHE/tools"
    "$CACHE/tools/bin/pip" install --quiet --disable-pip-version-check "$VIRTUALENV"
    "$CACHE/tools/bin/virtualenv" --quiet --python "$python2" "$CACHE/py2"
    "$CACHE/py2/bin/pip" install --quiet --disable-pip-version-check --no-python-version-warning \
        "${SUITE[@]}"
    # Written last: an install that stopped halfway is redone next time.
    printf '%s\n' "$wanted" >"$CACHE/installed"
}

# The suite. (Run it with PYTHONWARNINGS=ignore: Python 2's and
# cryptography's deprecation warnings say nothing about the examples.)
WSTEST="$CACHE/py2/bin/wstest"

# Waits until 127.0.0.1:$1 accepts connections, while process $2 lives,
# for at most $START_TIMEOUT seconds.
wait_for_port() {
    local port="$1" pid="$2" deadline=$((SECONDS + START_TIMEOUT))
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || return 1
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.1 # a poll interval, not a guess at when the port opens
    done
}

# Sends Ctrl-C (SIGINT) to process $1 and returns its exit code; one that
# is still running after $EXIT_TIMEOUT seconds is killed, and that is 124.
interrupt() {
    local pid="$1" deadline=$((SECONDS + EXIT_TIMEOUT)) code=0
    kill -INT "$pid"
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid"
        wait "$pid" 2>/dev/null || true
        return 124
    fi
    wait "$pid" || code=$?
    return "$code"
}

# Prints the summary of the report in directory $1 for side $2, and fails
# on any FAILED case or fewer than $EXPECTED_CASES cases.
summarise() {
    python3 - "$1" "$2" "$EXPECTED_CASES" <<'EOF'
import json, sys

report_dir, side, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    with open(report_dir + "/index.json") as f:
        agents = json.load(f)
except (OSError, ValueError) as e:
    sys.exit("autobahn: error: %s: no report: %s" % (side, e))
if len(agents) != 1:
    sys.exit("autobahn: error: %s: one agent expected in the report, found %s" % (side, sorted(agents)))
(agent, cases), = agents.items()

# A case's verdict is its `behavior`, or FAILED when only its close
# (`behaviorClose`) failed.
verdicts = {
    case: "FAILED" if r.get("behaviorClose") == "FAILED" else r["behavior"]
    for case, r in cases.items()
}
kinds = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
kinds += sorted(set(verdicts.values()) - set(kinds))
counts = ", ".join("%d %s" % (list(verdicts.values()).count(k), k) for k in kinds)
print("autobahn: %s (%s): %d cases: %s" % (side, agent, len(cases), counts))
numbered = lambda case: [int(n) for n in case.split(".")]
not_ok = ["%s %s" % (c, verdicts[c]) for c in sorted(verdicts, key=numbered) if verdicts[c] != "OK"]
print("  not OK: %s" % (", ".join(not_ok) or "none"))
print("  report: %s/index.html" % report_dir)
bad = [c for c, v in verdicts.items() if v not in ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED")]
if bad:
    sys.exit("autobahn: error: %s: %d cases FAILED" % (side, len(bad)))
if len(cases) < expected:
    sys.exit("autobahn: error: %s: %d cases ran, %d expected" % (side, len(cases), expected))
EOF
}

# echo_server on a free port, and the suite's fuzzingclient against it.
server_side() {
    local dir="$REPORTS/server" out="$WORK/echo_server.out" lines line url pid code=0
    rm -rf "$dir"
    mkdir -p "$dir"
    mkfifo "$out"
    # Its deadlines for slow clients are a policy (chapter 2.2) that RFC 6455
    # leaves open, and the suite is a slow client on a busy machine: Python
    # can take more than the default 5 s to read a 16 MiB echo (case 9.1.6,
    # then closed with 1008), or to send one, in which time echo_server hears
    # no whole message (closed with 1011). A minute keeps them out of the
    # verdicts, which are about the protocol.
    target/debug/examples/echo_server 127.0.0.1:0 --send-timeout-ms 60000 --pong-timeout-ms 60000 \
        >"$out" 2>"$dir/echo_server.log" &
    pid=$!
    started "$pid"
    # Its first line says where it listens (the port is its choice).
    exec {lines}<"$out"
    if ! read -r -t "$START_TIMEOUT" -u "$lines" line || [ "${line#listening on ws://}" = "$line" ]; then
        die "echo_server did not say 'listening on ws://...' (got '${line:-}'); see $dir/echo_server.log"
    fi
    url="${line#listening on }"
    cat >"$WORK/server.json" <<EOF
{"outdir": "$dir", "servers": [{"agent": "echo_server", "url": "$url"}],
 "cases": ["*"], "exclude-cases": ["12.*", "13.*"], "exclude-agent-cases": {}}
EOF
    say "server: the fuzzingclient against echo_server at $url"
    local start=$SECONDS
    PYTHONWARNINGS=ignore timeout "$RUN_TIMEOUT" "$WSTEST" -m fuzzingclient -s "$WORK/server.json" \
        >"$dir/wstest.log" 2>&1 ||
        die "server: wstest failed (exit $?); see $dir/wstest.log"
    say "server: the suite ran in $((SECONDS - start)) s"
    interrupt "$pid" || code=$?
    exec {lines}<&-
    [ "$code" -eq 0 ] || die "echo_server exited with $code after Ctrl-C, not 0; see $dir/echo_server.log"
    summarise "$dir" server
}

# The suite's fuzzingserver on a free port, and autobahn_client against it.
client_side() {
    local dir="$REPORTS/client" port url pid
    rm -rf "$dir"
    mkdir -p "$dir"
    # The suite takes its port from the spec and cannot pick one itself:
    # ask the kernel for a free one. Should another program take it first,
    # the suite exits and wait_for_port says so.
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    url="ws://127.0.0.1:$port"
    cat >"$WORK/client.json" <<EOF
{"url": "$url", "outdir": "$dir",
 "cases": ["*"], "exclude-cases": ["12.*", "13.*"], "exclude-agent-cases": {}}
EOF
    # `-u 0`: without the web server it would also start on port 8080, on
    # every interface.
    PYTHONWARNINGS=ignore "$WSTEST" -m fuzzingserver -u 0 -s "$WORK/client.json" \
        >"$dir/wstest.log" 2>&1 &
    pid=$!
    started "$pid"
    wait_for_port "$port" "$pid" ||
        die "client: the fuzzingserver did not open $url within ${START_TIMEOUT}s; see $dir/wstest.log"
    say "client: autobahn_client against the fuzzingserver at $url"
    local start=$SECONDS
    RUST_LOG=warn timeout "$RUN_TIMEOUT" target/debug/examples/autobahn_client "$url" \
        --agent autobahn_client 2>"$dir/autobahn_client.log" ||
        die "client: autobahn_client failed (exit $?); see $dir/autobahn_client.log"
    say "client: the suite ran in $((SECONDS - start)) s"
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    summarise "$dir" client
}

install_suite
cargo build --quiet --example echo_server --example autobahn_client
# The two sides share nothing but the machine, and the suite spends most of
# its time waiting on its peer and on its own timeouts, so they run at once:
# about a minute for both instead of two. Each side's lines are shown when
# it is done, in order.
for side in "${SIDES[@]}"; do
    "${side}_side" >"$WORK/$side.out" 2>&1 &
    SIDE_PIDS+=("$!")
done
[ "${#SIDES[@]}" -eq 1 ] || say "running the server and the client side at once"
failed=0
for i in "${!SIDES[@]}"; do
    wait "${SIDE_PIDS[$i]}" || failed=1
    cat "$WORK/${SIDES[$i]}.out"
done
exit "$failed"
