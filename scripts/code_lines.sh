#!/usr/bin/env bash
# The size budget of the tutorial's code, in code lines: lines that are not
# blank and not only a comment (`//`, `///`, `//!`). A learner reads these
# files whole, so each has a budget (issue "Teach in layers"): every example
# named below, and every library file under src/, whose unit tests (from
# `#[cfg(test)]` on) do not count.
#
#   scripts/code_lines.sh           print the table
#   scripts/code_lines.sh --check   also exit 1 when a file is over its budget
#
# A file listed that does not exist is "missing", and --check counts it as
# over budget too.
set -euo pipefail
cd "$(dirname "$0")/.."

check=false
case "${1:-}" in
    --check) check=true ;;
    "") ;;
    *) echo "usage: scripts/code_lines.sh [--check]" >&2; exit 2 ;;
esac

# Code lines of a file; with `lib`, only those before `#[cfg(test)]`.
count() {
    awk -v lib="$2" '
        lib == "lib" && /^[[:space:]]*#\[cfg\(test\)\]/ { exit }
        /^[[:space:]]*$/ { next }
        /^[[:space:]]*\/\// { next }
        { n++ }
        END { print n + 0 }
    ' "$1"
}

# file and budget: the first versions the chapters open with, the full
# examples of their main lessons, then every library file. axum_chat is
# chat_server's connection in axum's types, plus the router, the page, the
# Origin check and the conversions between the two message types.
budgets=(
    examples/echo_client_first.rs 50
    examples/echo_server_first.rs 50
    examples/full_client_first.rs 70
    examples/broadcast_server_first.rs 80
    examples/chat_client_first.rs 100
    examples/chat_server_first.rs 150
    examples/echo_server.rs 80
    examples/broadcast_server.rs 150
    examples/data_pusher.rs 130
    examples/chat_server.rs 220
    examples/chat_client.rs 250
    examples/axum_chat.rs 300
)
# Every library file, a module's submodules (src/cluster/relay.rs) included,
# so that splitting a file cannot hide its lines.
while IFS= read -r lib; do
    budgets+=("$lib" 500)
done < <(find src -name '*.rs' | LC_ALL=C sort)

over=0
printf '%-36s %6s %6s  %s\n' file lines budget ""
for ((i = 0; i < ${#budgets[@]}; i += 2)); do
    file=${budgets[i]} budget=${budgets[i + 1]}
    if [ ! -f "$file" ]; then
        printf '%-36s %6s %6s  %s\n' "$file" - "$budget" missing
        over=$((over + 1))
        continue
    fi
    kind=example
    [[ $file == src/* ]] && kind=lib
    lines=$(count "$file" "$kind")
    status=ok
    if [ "$lines" -gt "$budget" ]; then
        status="over by $((lines - budget))"
        over=$((over + 1))
    fi
    printf '%-36s %6s %6s  %s\n' "$file" "$lines" "$budget" "$status"
done
echo "code lines: $over of $((${#budgets[@]} / 2)) files over their budget"
if $check && [ "$over" -gt 0 ]; then
    exit 1
fi
