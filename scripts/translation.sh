#!/usr/bin/env bash
# The Chinese edition of the book (docs/po/zh-CN.po), with mdBook's gettext
# workflow: mdbook-xgettext (from the mdbook-i18n-helpers crate) extracts
# every paragraph, heading, list item and table cell of the English chapters
# into docs/po/messages.pot; docs/po/zh-CN.po holds a translation of each;
# mdbook-gettext puts them in place when the book's language is zh-CN.
# `msgmerge` and `msgfmt` come from GNU gettext (Debian's `gettext`).
#
#   scripts/translation.sh pot [DIR [--lines]]
#                                      write messages.pot to DIR (default docs/po);
#                                      --lines: with line numbers, which tell
#                                      tests/translation.rs code from prose
#   scripts/translation.sh update      regenerate docs/po/messages.pot and merge it
#                                      into docs/po/zh-CN.po: a new or changed
#                                      English paragraph comes back untranslated
#   scripts/translation.sh build [DIR] build both books: DIR/book and DIR/book-zh-CN
#                                      (default: book/ and book-zh-CN/ here)
#
# tests/translation.rs fails while messages.pot is not what `pot` writes, and
# while zh-CN.po has a fuzzy or untranslated paragraph: after changing a
# chapter, run `update`, translate what it marks, and commit all three.
set -euo pipefail
cd "$(dirname "$0")/.."

# Without line numbers (granularity 0), editing one paragraph changes one
# message of the template, not the references of every message below it.
pot() {
    local dir="${1:-docs/po}" granularity=0
    [ "${2:-}" = --lines ] && granularity=1
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    MDBOOK_OUTPUT="{\"xgettext\": {\"granularity\": $granularity}}" \
        MDBOOK_LOG=warn mdbook build docs -d "$dir"
}

# Both books, each one level below DIR, as book/ is below the repository
# root, so that the chapters' links to ../src and ../examples work in both.
build() {
    local dir="${1:-.}"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    mdbook build docs -d "$dir/book"
    MDBOOK_BOOK__LANGUAGE=zh-CN \
        MDBOOK_BOOK__TITLE="用 tokio 与 tokio-tungstenite 实现 WebSocket 实时通信" \
        mdbook build docs -d "$dir/book-zh-CN"
}

case "${1:-}" in
    pot) pot "${2:-}" "${3:-}" ;;
    update)
        # A new template only when the chapters' text changed, not for its
        # date alone, so that an update with nothing to do changes nothing.
        fresh="$(mktemp -d)"
        trap 'rm -rf "$fresh"' EXIT
        pot "$fresh"
        undated() { grep -v '^"POT-Creation-Date:' "$1"; }
        if ! cmp -s <(undated "$fresh/messages.pot") <(undated docs/po/messages.pot); then
            cp "$fresh/messages.pot" docs/po/messages.pot
        fi
        # Without fuzzy matching: a changed paragraph comes back empty, and
        # its old translation is in `git diff`. (Fuzzy matching would also
        # pair a new comment of a listing with some paragraph's translation.)
        msgmerge --quiet --update --backup=none --no-fuzzy-matching \
            docs/po/zh-CN.po docs/po/messages.pot
        msgattrib --no-obsolete -o docs/po/zh-CN.po docs/po/zh-CN.po
        msgfmt --statistics --check -o /dev/null docs/po/zh-CN.po
        ;;
    build) build "${2:-}" ;;
    *) echo "usage: scripts/translation.sh pot [DIR [--lines]] | update | build [DIR]" >&2; exit 2 ;;
esac
