//! Keeps the Chinese edition (中文版) in step with the English chapters.
//!
//! The book is translated with mdBook's gettext workflow
//! (`scripts/translation.sh`): `docs/po/messages.pot` holds every paragraph,
//! heading, list item and table cell of the English chapters, and
//! `docs/po/zh-CN.po` a Chinese translation of each. These tests fail when
//!
//! - `messages.pot` is not what the English chapters give today (a chapter
//!   changed and `scripts/translation.sh update` was not run);
//! - `zh-CN.po` lacks a message of the template, marks one fuzzy (its English
//!   changed), or leaves a paragraph untranslated;
//! - a translation loses an inline code span, a link's target or a number of
//!   its English, or a sentence has no Chinese in it;
//! - a message from a code block is translated: the Chinese book's code is
//!   the English book's, comments included, so that each listing is still the
//!   file the reader runs;
//! - either book fails to build, the two books' code blocks differ, or a
//!   link to a heading leads nowhere in either book.
//!
//! They need mdBook, mdbook-i18n-helpers and GNU gettext: without them a
//! plain `cargo test` lists them as ignored, and with `CI` set they fail.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use common::{Component, TempDir, run_trials, trial, trial_needing};

fn main() -> ExitCode {
    let tools = tools_component();
    let trials = vec![
        trial_needing(
            &tools,
            "messages_pot_is_what_the_english_chapters_give",
            messages_pot_is_what_the_english_chapters_give,
        ),
        trial_needing(
            &tools,
            "every_paragraph_is_translated_and_code_stays_as_it_is",
            every_paragraph_is_translated_and_code_stays_as_it_is,
        ),
        trial_needing(
            &tools,
            "both_books_build_with_the_same_code_and_links_that_lead_somewhere",
            both_books_build_with_the_same_code_and_links_that_lead_somewhere,
        ),
        trial("po_entries_are_read_with_their_flags_and_escapes", po_entries_are_read),
        trial(
            "a_translation_that_loses_code_a_link_or_a_number_is_reported",
            a_translation_that_loses_code_a_link_or_a_number_is_reported,
        ),
        trial("lines_inside_fenced_blocks_are_code", lines_inside_fenced_blocks_are_code),
    ];
    run_trials(include_str!("translation.rs"), trials)
}

/// mdBook with mdbook-i18n-helpers' two programs, and GNU gettext's
/// `msgfmt`: what scripts/translation.sh runs.
fn tools_component() -> Component {
    let probes: [(&str, &[&str]); 4] = [
        ("mdbook", &["--version"]),
        ("mdbook-xgettext", &[]),
        ("mdbook-gettext", &["supports", "html"]),
        ("msgfmt", &["--version"]),
    ];
    let missing = probes.iter().find_map(|(program, args)| {
        // mdbook-xgettext has no --version: that it starts is enough.
        Command::new(program)
            .args(*args)
            .stdin(std::process::Stdio::null())
            .output()
            .err()
            .map(|e| format!("cannot run `{program}`: {e}"))
    });
    Component {
        name: "the book's translation tools",
        install: "cargo install --locked mdbook mdbook-i18n-helpers@0.4.0 && apt-get install gettext",
        missing,
    }
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs scripts/translation.sh with `args`; panics with its output on failure.
fn script(args: &[&str]) {
    let out = Command::new("bash")
        .arg(root().join("scripts/translation.sh"))
        .args(args)
        .output()
        .expect("run scripts/translation.sh");
    assert!(
        out.status.success(),
        "scripts/translation.sh {}: {}\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh template in a directory of its own (with line numbers if `lines`).
fn fresh_template(lines: bool) -> (TempDir, String) {
    let dir = TempDir::new();
    let path = dir.path.to_str().expect("a UTF-8 temporary path").to_string();
    let mut args = vec!["pot", &path];
    if lines {
        args.push("--lines");
    }
    script(&args);
    let text = read(&dir.path.join("messages.pot"));
    (dir, text)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

async fn messages_pot_is_what_the_english_chapters_give() {
    let (_dir, fresh) = fresh_template(false);
    let committed = read(&root().join("docs/po/messages.pot"));
    // The one line that changes on every run.
    let dated = |text: &str| -> String {
        text.lines()
            .filter(|l| !l.starts_with("\"POT-Creation-Date:"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    if dated(&fresh) != dated(&committed) {
        let (fresh, committed) = (entries(&fresh), entries(&committed));
        let ids =
            |entries: &[Entry]| entries.iter().map(|e| e.msgid.clone()).collect::<HashSet<_>>();
        let (now, then) = (ids(&fresh), ids(&committed));
        let new: Vec<_> = now.difference(&then).take(3).collect();
        let gone: Vec<_> = then.difference(&now).take(3).collect();
        panic!(
            "docs/po/messages.pot is not what the English chapters give: run \
             `scripts/translation.sh update`, translate what it marks in docs/po/zh-CN.po, \
             and commit both.\nnew in the chapters (first 3): {new:#?}\n\
             no longer in the chapters (first 3): {gone:#?}"
        );
    }
}

async fn every_paragraph_is_translated_and_code_stays_as_it_is() {
    let status = Command::new("msgfmt")
        .args(["--check", "-o", "/dev/null"])
        .arg(root().join("docs/po/zh-CN.po"))
        .output()
        .expect("run msgfmt");
    assert!(
        status.status.success(),
        "msgfmt --check docs/po/zh-CN.po: {}",
        String::from_utf8_lossy(&status.stderr)
    );

    // Which messages come from code blocks: the template with line numbers
    // says where each message is. A message found in a code block and in
    // prose too (a table header that is also a string of a listing) counts
    // as code: one translation would change both.
    let (_dir, template) = fresh_template(true);
    let mut chapters = HashMap::new();
    let code: HashSet<String> = entries(&template)
        .into_iter()
        .filter(|e| {
            e.references.iter().any(|reference| {
                let (file, line) = reference.rsplit_once(':').expect("file:line");
                let file = file.trim_start_matches("./").to_string();
                let fenced = chapters
                    .entry(file.clone())
                    .or_insert_with(|| fenced_lines(&read(&root().join("docs").join(&file))));
                fenced[line.parse::<usize>().expect("a line number") - 1]
            })
        })
        .map(|e| e.msgid)
        .collect();

    let template = entries(&read(&root().join("docs/po/messages.pot")));
    let po = entries(&read(&root().join("docs/po/zh-CN.po")));
    let translations: HashMap<&str, &Entry> =
        po.iter().filter(|e| !e.obsolete).map(|e| (e.msgid.as_str(), e)).collect();
    let mut problems = Vec::new();
    for message in template.iter().filter(|e| !e.msgid.is_empty()) {
        let id = message.msgid.as_str();
        let Some(entry) = translations.get(id) else {
            problems.push(format!("not in zh-CN.po (run scripts/translation.sh update): {id:?}"));
            continue;
        };
        if entry.fuzzy {
            problems.push(format!("fuzzy (its English changed): {id:?}"));
        } else if code.contains(id) {
            if !entry.msgstr.is_empty() && entry.msgstr != id {
                problems.push(format!("code is translated, and must not be: {id:?}"));
            }
        } else if entry.msgstr.is_empty() {
            if has_words(id) {
                problems.push(format!("untranslated: {id:?}"));
            }
        } else {
            problems.extend(translation_problems(id, &entry.msgstr));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/po/zh-CN.po, {} problems (first 20):\n{}",
        problems.len(),
        problems.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}

async fn both_books_build_with_the_same_code_and_links_that_lead_somewhere() {
    let dir = TempDir::new();
    script(&["build", dir.path.to_str().expect("a UTF-8 temporary path")]);
    let (english, chinese) = (dir.path.join("book"), dir.path.join("book-zh-CN"));
    let chapters: Vec<String> = std::fs::read_dir(root().join("docs"))
        .expect("read docs/")
        .map(|e| e.expect("a docs/ entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".md") && name != "SUMMARY.md")
        .map(|name| name.replace(".md", ".html"))
        .collect();
    let mut problems = Vec::new();
    for page in &chapters {
        let (en, zh) = (read(&english.join(page)), read(&chinese.join(page)));
        if code_blocks(&en) != code_blocks(&zh) {
            problems
                .push(format!("{page}: the Chinese page's code blocks differ from the English"));
        }
        // Every page measures 0.74 to 0.92 today (chapter 7, with its tables
        // of test names, is the lowest); an English page measures 0.
        if !zh.contains("<html lang=\"zh-CN\"") || chinese_share(&zh) < 0.6 {
            problems.push(format!("{page}: the Chinese page is not mostly Chinese prose"));
        }
        if let Some(mark) = unrendered_emphasis(&zh) {
            problems.push(format!("{page}: emphasis shown as text: {mark:?}"));
        }
        for (book, html) in [(&english, &en), (&chinese, &zh)] {
            problems.extend(dead_fragments(book, page, html));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// One message of a PO file or template.
#[derive(Debug, Default, PartialEq)]
struct Entry {
    references: Vec<String>,
    fuzzy: bool,
    obsolete: bool,
    msgid: String,
    msgstr: String,
}

/// The entries of a PO file (the header, with an empty msgid, included).
fn entries(text: &str) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut entry = Entry::default();
    let mut field: Option<bool> = None; // Some(true): in msgid, Some(false): in msgstr
    for line in text.lines().chain([""]) {
        let (line, obsolete) = match line.strip_prefix("#~") {
            Some(rest) => (rest.trim_start(), true),
            None => (line, false),
        };
        entry.obsolete |= obsolete;
        if line.trim().is_empty() {
            if field.is_some() {
                entries.push(std::mem::take(&mut entry));
            }
            field = None;
        } else if let Some(refs) = line.strip_prefix("#:") {
            entry.references.extend(refs.split_whitespace().map(str::to_string));
        } else if let Some(flags) = line.strip_prefix("#,") {
            entry.fuzzy |= flags.split(',').any(|f| f.trim() == "fuzzy");
        } else if line.starts_with('#') {
        } else if let Some(s) = line.strip_prefix("msgid ") {
            entry.msgid = unquote(s);
            field = Some(true);
        } else if let Some(s) = line.strip_prefix("msgstr ") {
            entry.msgstr = unquote(s);
            field = Some(false);
        } else if line.starts_with('"') {
            match field {
                Some(true) => entry.msgid += &unquote(line),
                Some(false) => entry.msgstr += &unquote(line),
                None => panic!("a string outside msgid and msgstr: {line}"),
            }
        }
    }
    entries
}

/// A PO string's content: `"a\"b\n"` is `a"b` and a newline.
fn unquote(quoted: &str) -> String {
    let inner = quoted.trim().strip_prefix('"').and_then(|s| s.strip_suffix('"'));
    let inner = inner.unwrap_or_else(|| panic!("not a PO string: {quoted}"));
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => panic!("a PO string ends with a backslash: {quoted}"),
        }
    }
    out
}

/// For each line of a chapter, whether it is inside a fenced block (the
/// fence lines included): those are code. A fence is three or more backticks
/// or tildes, indented or not (in a list item); the block ends at a line of
/// the same character, at least as many, and nothing else.
fn fenced_lines(chapter: &str) -> Vec<bool> {
    let mut open: Option<(char, usize)> = None;
    chapter
        .lines()
        .map(|line| {
            let trimmed = line.trim();
            let fence = |c: char| trimmed.chars().take_while(|&x| x == c).count();
            match open {
                Some((c, n)) => {
                    if fence(c) >= n && trimmed.chars().all(|x| x == c) {
                        open = None;
                    }
                    true
                }
                None => {
                    for c in ['`', '~'] {
                        if fence(c) >= 3 {
                            open = Some((c, fence(c)));
                        }
                    }
                    open.is_some()
                }
            }
        })
        .collect()
}

/// A message's text without its inline code, link targets and HTML tags:
/// the words a translator translates.
fn prose_of(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let skip_to = match c {
            '`' => {
                let ticks = rest.chars().take_while(|&x| x == '`').count();
                let fence = "`".repeat(ticks);
                rest[ticks..].find(&fence).map(|i| ticks + i + ticks)
            }
            ']' if rest.starts_with("](") => rest.find(')').map(|i| i + 1),
            '<' => rest.find('>').map(|i| i + 1),
            _ => None,
        };
        match skip_to {
            Some(n) => {
                out.push(' ');
                rest = &rest[n..];
            }
            None => {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out
}

/// Whether a message has anything to translate: a message that is only
/// code, links or figures reads the same in both books.
fn has_words(text: &str) -> bool {
    prose_of(text).chars().any(|c| c.is_ascii_alphabetic())
}

/// The inline code spans of a message, sorted.
fn code_spans(text: &str) -> Vec<String> {
    let mut spans = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('`') {
        let ticks = rest[start..].chars().take_while(|&x| x == '`').count();
        let fence = "`".repeat(ticks);
        let body = start + ticks;
        let Some(len) = rest[body..].find(&fence) else { break };
        spans.push(rest[start..body + len + ticks].to_string());
        rest = &rest[body + len + ticks..];
    }
    spans.sort();
    spans
}

/// The files the links of a message lead to, sorted (their `#fragment` is
/// the heading's id, which the Chinese heading changes).
fn link_files(text: &str) -> Vec<String> {
    let mut files: Vec<String> = text
        .match_indices("](")
        .map(|(i, _)| text[i + 2..].split([')', ' ', '#']).next().unwrap_or_default().to_string())
        .collect();
    files.sort();
    files
}

/// The numbers written in digits in a message's prose: `10,000`, `4.40`, `1001`.
fn numbers(text: &str) -> Vec<String> {
    let prose = prose_of(text);
    let mut found = Vec::new();
    let mut current = String::new();
    let mut chars = prose.chars().peekable();
    while let Some(c) = chars.next() {
        let joins = matches!(c, '.' | ',' | ':')
            && !current.is_empty()
            && chars.peek().is_some_and(|n| n.is_ascii_digit());
        if c.is_ascii_digit() || joins {
            current.push(c);
        } else if !current.is_empty() {
            found.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        found.push(current);
    }
    found
}

fn is_chinese(c: char) -> bool {
    ('\u{4e00}'..='\u{9fff}').contains(&c)
}

/// What a translation of `english` loses: inline code, a link, a number, a
/// final newline, or (for a sentence) all its Chinese.
fn translation_problems(english: &str, chinese: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut problem = |what: String| problems.push(format!("{what}: {english:?} -> {chinese:?}"));
    if code_spans(english) != code_spans(chinese) {
        problem(format!("inline code differs (the English has {:?})", code_spans(english)));
    }
    // Each edition's introduction links the other: where the English links
    // the Chinese book, the Chinese links the English one.
    let other_edition: Vec<String> =
        link_files(english).iter().map(|f| f.replace("../book-zh-CN/", "../book/")).collect();
    if other_edition != link_files(chinese) {
        problem(format!("link targets differ (the English has {:?})", link_files(english)));
    }
    let mut left = numbers(chinese);
    for n in numbers(english) {
        match left.iter().position(|m| *m == n) {
            Some(i) => drop(left.remove(i)),
            None => problem(format!("the number {n} is missing")),
        }
    }
    if english.ends_with('\n') != chinese.ends_with('\n') {
        problem("the final newline differs".to_string());
    }
    let words = prose_of(english)
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| w.len() >= 2)
        .count();
    if words >= 3 && !chinese.chars().any(is_chinese) {
        problem("a sentence without Chinese".to_string());
    }
    problems
}

/// The contents of a page's `<pre>` blocks, in order.
fn code_blocks(html: &str) -> Vec<&str> {
    html.split("<pre").skip(1).map(|block| block.split("</pre>").next().unwrap_or(block)).collect()
}

/// A page's main text without its `<pre>` blocks, inline code and tags.
fn main_prose(html: &str) -> String {
    let main = html.split("<main>").nth(1).and_then(|m| m.split("</main>").next()).unwrap_or("");
    let text: String = main
        .split("<pre")
        .enumerate()
        .map(|(i, part)| if i == 0 { part } else { part.split("</pre>").nth(1).unwrap_or("") })
        .collect();
    let text: String = text
        .split("<code>")
        .enumerate()
        .map(|(i, part)| if i == 0 { part } else { part.split("</code>").nth(1).unwrap_or("") })
        .collect();
    prose_of(&text)
}

/// How much of a page's main text is Chinese: Chinese characters against
/// all letters and Chinese characters outside `<pre>` and tags.
fn chinese_share(html: &str) -> f64 {
    let text = main_prose(html);
    let chinese = text.chars().filter(|&c| is_chinese(c)).count() as f64;
    let latin = text.split(|c: char| !c.is_ascii_alphabetic()).filter(|w| !w.is_empty()).count();
    chinese / (chinese + latin as f64).max(1.0)
}

/// The first emphasis mark left as text in a page's prose, if any.
/// mdbook-gettext writes a translation's `*emphasis*` back as `_emphasis_`,
/// and an underscore between two Chinese characters neither opens nor
/// closes emphasis: `在 _之前_获取` shows its underscores. (A space after the
/// closing mark, or punctuation, lets it close.)
fn unrendered_emphasis(html: &str) -> Option<String> {
    let text = main_prose(html);
    let chars: Vec<char> = text.chars().collect();
    chars.windows(2).enumerate().find_map(|(i, pair)| {
        let marked = match pair {
            ['*', '*'] => true,
            ['_', c] | [c, '_'] => is_chinese(*c),
            _ => false,
        };
        marked.then(|| chars[i.saturating_sub(10)..(i + 12).min(chars.len())].iter().collect())
    })
}

/// The links of `page` (in `book`) to a heading that is not there: a link
/// `href="X.html#id"` or `href="#id"` needs an element with `id="id"` in X.
fn dead_fragments(book: &Path, page: &str, html: &str) -> Vec<String> {
    let mut ids: BTreeMap<String, HashSet<String>> = BTreeMap::new();
    let mut ids_of = |file: &str| -> HashSet<String> {
        ids.entry(file.to_string())
            .or_insert_with(|| {
                let path: PathBuf = book.join(file);
                let html = std::fs::read_to_string(path).unwrap_or_default();
                html.split(" id=\"")
                    .skip(1)
                    .filter_map(|s| s.split('"').next())
                    .map(str::to_string)
                    .collect()
            })
            .clone()
    };
    let mut dead = Vec::new();
    for href in html.split("href=\"").skip(1).filter_map(|s| s.split('"').next()) {
        let Some((file, fragment)) = href.split_once('#') else { continue };
        if file.contains("://") || fragment.is_empty() {
            continue;
        }
        let file = if file.is_empty() { page } else { file };
        if !file.ends_with(".html") || file.contains('/') {
            continue;
        }
        let fragment = percent_decoded(fragment);
        if !ids_of(file).contains(&fragment) {
            let edition = book.file_name().unwrap_or_default().to_string_lossy();
            dead.push(format!("{edition}/{page}: the link {href} leads to no heading"));
        }
    }
    dead
}

/// `%E6%8E%A5` -> `接`: mdBook writes a link's non-ASCII characters so.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn po_entries_are_read() {
    let po = "msgid \"\"\nmsgstr \"\"\n\"Language: zh_CN\\n\"\n\n\
              #: ./a.md:3 ./b.md:9\n#, fuzzy\nmsgid \"\"\n\"Say \\\"hi\\\"\\n\"\n\"twice\"\nmsgstr \"说\"\n\n\
              #~ msgid \"gone\"\n#~ msgstr \"走了\"\n";
    let entries = entries(po);
    assert_eq!(entries.len(), 3, "{entries:#?}");
    assert_eq!(entries[0].msgstr, "Language: zh_CN\n");
    assert_eq!(
        entries[1],
        Entry {
            references: vec!["./a.md:3".into(), "./b.md:9".into()],
            fuzzy: true,
            obsolete: false,
            msgid: "Say \"hi\"\ntwice".into(),
            msgstr: "说".into(),
        }
    );
    assert!(entries[2].obsolete && entries[2].msgid == "gone");
}

async fn a_translation_that_loses_code_a_link_or_a_number_is_reported() {
    let english = "Run `cargo test` on [2 cores](08-performance.md#results) for 10,000 clients.";
    let good = "在 [2 个核心](08-performance.md#82-结果)上用 10,000 个客户端运行 `cargo test`。";
    assert_eq!(translation_problems(english, good), Vec::<String>::new());
    for (bad, what) in [
        ("在 [2 个核心](08-performance.md)上用 10,000 个客户端运行 cargo test。", "inline code"),
        ("在 2 个核心上用 10,000 个客户端运行 `cargo test`。", "link targets"),
        ("在 [2 个核心](08-performance.md)上用一万个客户端运行 `cargo test`。", "10,000"),
        ("Run `cargo test` on [2 cores](08-performance.md) for 10,000 clients.", "without Chinese"),
    ] {
        let problems = translation_problems(english, bad);
        assert!(problems.iter().any(|p| p.contains(what)), "{bad}: {problems:?}");
    }
    assert!(has_words("A sentence with `code`."));
    assert!(!has_words("`code` 4.40 [¹](#note)"));
    assert_eq!(
        numbers("p99 of 41 ms at 1,000 × 200 msg/s, 6.3 µs."),
        ["99", "41", "1,000", "200", "6.3"]
    );
}

async fn lines_inside_fenced_blocks_are_code() {
    let chapter = "Text\n```rust\nlet a = 1;\n```\n- item\n\n  ````text\n  ```\n  ````\nmore\n";
    assert_eq!(
        fenced_lines(chapter),
        [false, true, true, true, false, false, true, true, true, false]
    );
}
