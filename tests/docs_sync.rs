//! Keeps docs/*.md and README.md (and README.zh-CN.md) in step with the code, the way the Rust Book
//! does: a chapter never contains a copy of code, it names the code it quotes,
//! and this test checks that the quote is still exact.
//!
//! Every ```rust block (and every ```lua block: the cluster's Redis scripts,
//! whole files; and ```ini and ```yaml: deploy/'s systemd unit and
//! Prometheus files) must be preceded (only blank lines between) by one of:
//!
//! - `<!-- include: examples/echo_server.rs#echo -->`: the block is the region
//!   `echo` of that file, i.e. the lines between `// ANCHOR: echo` and
//!   `// ANCHOR_END: echo`, with
//!   1. every `// ANCHOR: ..` and `// ANCHOR_END: ..` line inside removed
//!      (regions may nest or overlap), and
//!   2. the indentation common to all non-blank lines removed (a method quoted
//!      from inside an `impl` starts at column 0).
//! - `<!-- include: src/client.rs -->`: the whole file, anchor lines removed.
//! - `<!-- counter-example -->`: deliberately naive code the chapter warns
//!   against; not compared with anything.
//!
//! Paths are relative to the crate root. Besides the quotes, the test checks
//! that every `cargo run --example NAME` names a file in examples/, that every
//! relative Markdown link points to a file that exists (and its `#anchor`, if
//! any, to a heading of that file), that every fenced block says its language
//! (so that Rust cannot hide in an unlabelled block), and that
//! docs/SUMMARY.md, the table of contents of `mdbook build docs`, lists every
//! chapter, and that the code a chapter quotes uses no name a later chapter
//! introduces (`TAUGHT_LATER`: the cluster of chapter 9, the admission,
//! tokens, TLS and admin port of chapter 10; `NOT_YET_LAYERED`, the quotes once
//! excused from that, is empty and may only stay so).

use std::collections::HashMap;
use std::path::Path;

/// The languages of the blocks that quote code, and so need a marker.
const QUOTED: [&str; 4] = ["rust", "lua", "ini", "yaml"];

/// What checking the docs found.
#[derive(Debug, Default)]
struct Report {
    /// One line per problem: `doc:line: what is wrong`.
    problems: Vec<String>,
    /// How many blocks were compared with the code they quote.
    compared: usize,
}

/// A marker that applies to the next ```rust (or ```lua) block: where it
/// was, and what it says.
struct Marker {
    line: usize,
    include: Option<String>, // None: a counter-example
}

const NO_BLOCK: &str = "marker is not followed by a ```rust (or ```lua) block";

/// Checks one Markdown document. `doc` is its path relative to the crate
/// root (for messages and relative links); `read` returns the text of a file
/// given its path relative to the crate root, or `None` if there is none.
fn check_doc(doc: &str, text: &str, read: &dyn Fn(&str) -> Option<String>) -> Report {
    let mut report = Report::default();
    let mut problem =
        |line: usize, what: String| report.problems.push(format!("{doc}:{line}: {what}"));
    let mut compared = 0;
    let mut marker: Option<Marker> = None;
    let mut lines = text.lines().enumerate().map(|(i, line)| (i + 1, line));

    while let Some((n, line)) = lines.next() {
        check_example_names(line, read, |what| problem(n, what));
        let trimmed = line.trim();
        if let Some(comment) = trimmed.strip_prefix("<!--").and_then(|c| c.strip_suffix("-->")) {
            let comment = comment.trim();
            if let Some(spec) = comment.strip_prefix("include:") {
                marker = Some(Marker { line: n, include: Some(spec.trim().to_string()) });
                continue;
            } else if comment == "counter-example" {
                marker = Some(Marker { line: n, include: None });
                continue;
            }
        }
        if trimmed.is_empty() {
            continue; // a marker stays pending across blank lines
        }
        let Some(info) = trimmed.strip_prefix("```") else {
            check_links(doc, line, read, |what| problem(n, what));
            if let Some(m) = marker.take() {
                problem(m.line, "marker is not followed by a ```rust block".into());
            }
            continue;
        };

        // A fenced block: collect its lines, without the fence's indentation.
        let indent = &line[..line.len() - line.trim_start().len()];
        let mut block = Vec::new();
        for (m, inner) in lines.by_ref() {
            if inner.trim() == "```" {
                break;
            }
            check_example_names(inner, read, |what| problem(m, what));
            block.push(inner.strip_prefix(indent).unwrap_or(inner.trim_start()));
        }
        let language = info.split([',', ' ']).next().unwrap_or_default();
        let quoted = QUOTED.contains(&language);
        match (language, marker.take()) {
            ("", _) => problem(n, "fenced block without a language (```rust, ```text, ...)".into()),
            (_, None) if quoted => problem(
                n,
                format!(
                    "```{language} block without a marker: add <!-- include: FILE#REGION --> \
                     or <!-- counter-example --> above it"
                ),
            ),
            (_, Some(Marker { include: None, .. })) if quoted => {}
            (_, Some(Marker { include: Some(spec), .. })) if quoted => {
                compared += 1;
                if let Err((line, what)) = compare(&spec, &block, n, read) {
                    problem(line, what);
                }
            }
            (_, Some(m)) => problem(m.line, NO_BLOCK.into()),
            (_, None) => {}
        }
    }
    if let Some(m) = marker {
        problem(m.line, NO_BLOCK.into());
    }
    report.compared = compared;
    report
}

/// Compares a quoted block (whose opening fence is on line `fence`) with the
/// code named by `spec` (`FILE` or `FILE#REGION`). An error carries the doc
/// line it is about.
fn compare(
    spec: &str,
    block: &[&str],
    fence: usize,
    read: &dyn Fn(&str) -> Option<String>,
) -> Result<(), (usize, String)> {
    let (file, name) = match spec.split_once('#') {
        Some((file, name)) => (file, Some(name)),
        None => (spec, None),
    };
    let source = read(file).ok_or_else(|| (fence, format!("{file} does not exist")))?;
    let code = region(&source, name).ok_or_else(|| {
        let name = name.unwrap_or_default();
        (fence, format!("{file} has no region `// ANCHOR: {name}` ... `// ANCHOR_END: {name}`"))
    })?;
    let code: Vec<&str> = code.lines().collect();
    if code == block {
        return Ok(());
    }
    // Name the first line that differs.
    let i = code.iter().zip(block).take_while(|(a, b)| a == b).count();
    let show = |line: Option<&&str>| match line {
        Some(line) => format!("{line:?}"),
        None => "(nothing: the block ends here)".to_string(),
    };
    let what = format!(
        "block differs from {spec}:\n    doc:  {}\n    code: {}",
        show(block.get(i)),
        show(code.get(i))
    );
    Err((fence + 1 + i, what))
}

/// The region `name` of `source` (or all of it for `None`), anchor lines
/// removed and common indentation removed; `None` if there is no such region.
fn region(source: &str, name: Option<&str>) -> Option<String> {
    let mut lines: Vec<&str> = source.lines().collect();
    if let Some(name) = name {
        let (start, end) = (format!("// ANCHOR: {name}"), format!("// ANCHOR_END: {name}"));
        let first = lines.iter().position(|l| l.trim() == start)? + 1;
        let len = lines[first..].iter().position(|l| l.trim() == end)?;
        lines = lines[first..first + len].to_vec();
    }
    lines.retain(|l| {
        !(l.trim().starts_with("// ANCHOR:") || l.trim().starts_with("// ANCHOR_END:"))
    });
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let dedented: Vec<&str> = lines.iter().map(|l| l.get(indent..).unwrap_or("")).collect();
    Some(dedented.join("\n"))
}

/// Every `cargo run ... --example NAME` on `line` must name an example.
fn check_example_names(
    line: &str,
    read: &dyn Fn(&str) -> Option<String>,
    mut problem: impl FnMut(String),
) {
    if !line.contains("cargo run") {
        return;
    }
    let mut words = line.split_whitespace();
    while let Some(word) = words.next() {
        let name = match word.strip_prefix("--example") {
            Some("") => words.next().unwrap_or_default(),
            Some(rest) => rest.strip_prefix('=').unwrap_or_default(),
            None => continue,
        };
        // An example's name is ASCII; what follows it (a backtick, and in
        // README.zh-CN.md Chinese text with no space) is not part of it.
        let name = name
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .next()
            .unwrap_or_default();
        let exists = |path: String| read(&path).is_some();
        if !exists(format!("examples/{name}.rs")) && !exists(format!("examples/{name}/main.rs")) {
            problem(format!("`cargo run --example {name}`: there is no examples/{name}.rs"));
        }
    }
}

/// Every relative Markdown link `[text](target)` on `line` must point to a
/// file or directory that exists, and its `#anchor`, if any, to a heading of
/// the Markdown file it names (`#anchor` alone: a heading of `doc`). Web links
/// and links into the built books are not checked.
fn check_links(
    doc: &str,
    line: &str,
    read: &dyn Fn(&str) -> Option<String>,
    mut problem: impl FnMut(String),
) {
    for target in link_targets(line) {
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let (path, anchor) = match target.split_once('#') {
            Some((path, anchor)) => (path, Some(anchor)),
            None => (target, None),
        };
        let resolved = if path.is_empty() {
            doc.to_string()
        } else {
            let dir = Path::new(doc).parent().unwrap_or(Path::new(""));
            normalize(&dir.join(path))
        };
        // The two built editions (scripts/translation.sh build): not in the
        // repository, so there is nothing to check them against.
        if resolved.starts_with("book/") || resolved.starts_with("book-zh-CN/") {
            continue;
        }
        let Some(text) = read(&resolved) else {
            problem(format!("link to {target}: {resolved} does not exist"));
            continue;
        };
        let Some(anchor) = anchor else { continue };
        if !resolved.ends_with(".md") {
            problem(format!(
                "link to {target}: an anchor can only be checked against the headings \
                 of a Markdown file"
            ));
        } else if !heading_anchors(&text).iter().any(|a| a == anchor) {
            problem(format!(
                "link to {target}: {resolved} has no heading with the anchor #{anchor}"
            ));
        }
    }
}

/// The targets of the Markdown links `[text](target)` and images
/// `![alt](target)` on `line` (a link's title, after a space, is left out).
fn link_targets(line: &str) -> impl Iterator<Item = &str> {
    line.match_indices("](")
        .map(move |(i, _)| line[i + 2..].split([')', ' ']).next().unwrap_or_default())
}

/// The anchors of the `#` headings of a Markdown text (those in fenced blocks
/// do not count), in order, made the way both GitHub and mdBook make them:
/// the heading's text lowercased, each space turned into `-`, and every
/// character but letters, digits, `-` and `_` dropped; an anchor already taken
/// gets `-1`, `-2`, ... Links in a heading count by their text. `_emphasis_`
/// keeps its underscores here (GitHub and mdBook drop them): use `*emphasis*`
/// in headings.
fn heading_anchors(text: &str) -> Vec<String> {
    let mut anchors: Vec<String> = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        // The same fences as check_doc: any ``` opens, a bare ``` closes.
        if (!fenced && trimmed.starts_with("```")) || (fenced && trimmed.trim_end() == "```") {
            fenced = !fenced;
            continue;
        }
        let level = trimmed.bytes().take_while(|&b| b == b'#').count();
        let rest = &trimmed[level..];
        if fenced || !(1..=6).contains(&level) || !(rest.is_empty() || rest.starts_with(' ')) {
            continue;
        }
        // A closing run of `#` is not part of the title, unless it is glued
        // to the text (`# C#`).
        let title = rest.trim();
        let unclosed = title.trim_end_matches('#');
        let title = if unclosed.is_empty() || unclosed.ends_with(' ') { unclosed } else { title };
        let base = slug(&without_link_targets(title));
        let mut anchor = base.clone();
        for n in 1.. {
            if !anchors.contains(&anchor) {
                break;
            }
            anchor = format!("{base}-{n}");
        }
        anchors.push(anchor);
    }
    anchors
}

/// `[text](target)` -> `[text`: what is left is dropped by `slug` except the text.
fn without_link_targets(title: &str) -> String {
    let mut text = title.to_string();
    while let Some(i) = text.find("](") {
        let end = text[i..].find(')').map_or(text.len(), |j| i + j + 1);
        text.replace_range(i..end, "");
    }
    text
}

fn slug(text: &str) -> String {
    text.trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            c if c.is_alphanumeric() || c == '_' || c == '-' => Some(c),
            c if c.is_whitespace() => Some('-'),
            _ => None,
        })
        .collect()
}

/// docs/SUMMARY.md (`summary`) must link to every chapter (`chapters`: the
/// other docs/*.md, relative to docs/), and to the numbered ones (`NN-*.md`)
/// in the order of their numbers (a chapter's pages, `02-*.md`, in any
/// order among themselves): the book follows SUMMARY.md's order, and its
/// sidebar should say what the chapters' titles say.
fn check_summary(summary: &str, chapters: &[String]) -> Vec<String> {
    let listed: Vec<String> =
        summary.lines().flat_map(link_targets).map(|t| normalize(Path::new(t))).collect();
    let mut problems: Vec<String> = chapters
        .iter()
        .filter(|chapter| !listed.contains(chapter))
        .map(|chapter| format!("docs/SUMMARY.md does not list docs/{chapter}"))
        .collect();
    let numbered: Vec<&String> = listed.iter().filter(|t| is_numbered_chapter(t)).collect();
    // By number only: a chapter's second page (`02-inside-...` after
    // `02-tokio-...`) may follow its first in any alphabetical order.
    if !numbered.is_sorted_by_key(|name| &name[..2]) {
        problems.push(format!(
            "docs/SUMMARY.md lists the numbered chapters out of order: {numbered:?}"
        ));
    }
    problems
}

/// `01-websocket-basics.md`: two digits, a dash, Markdown.
fn is_numbered_chapter(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.len() > 3
        && bytes[..2].iter().all(u8::is_ascii_digit)
        && bytes[2] == b'-'
        && name.ends_with(".md")
}

/// `docs/../examples/x.rs` -> `examples/x.rs`, so that paths match the keys
/// of the in-memory file map used by the unit checks below.
fn normalize(path: &Path) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.to_str().unwrap_or_default().split('/') {
        match part {
            "" | "." => {}
            ".." => _ = parts.pop(),
            _ => parts.push(part),
        }
    }
    parts.join("/")
}

/// Reads a file of this crate; a directory or a binary file (an image)
/// reads as empty text, so that links to them count as existing.
fn read_crate_file(path: &str) -> Option<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).ok().or_else(|| path.exists().then(String::new))
}

/// docs/*.md (sorted), then README.md and its Chinese twin README.zh-CN.md
/// where they exist, relative to the crate root.
fn doc_files() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut docs: Vec<String> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    docs.sort();
    for readme in ["README.md", "README.zh-CN.md"] {
        if root.join(readme).exists() {
            docs.push(readme.into());
        }
    }
    docs
}

/// Rewrites every ```rust (or ```lua) block that follows an include marker with the
/// code it names (blocks whose code is missing are left as they are, for
/// the check to report). Used by `UPDATE_DOCS=1 cargo test --test docs_sync`
/// after an intended change to quoted code; review the diff before committing.
fn requote(text: &str, read: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = Vec::new();
    let mut include: Option<String> = None;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        out.push(line.to_string());
        let trimmed = line.trim();
        if let Some(spec) =
            trimmed.strip_prefix("<!-- include:").and_then(|c| c.strip_suffix("-->"))
        {
            include = Some(spec.trim().to_string());
        } else if trimmed.strip_prefix("```").is_some_and(|language| QUOTED.contains(&language)) {
            let spec = include.take();
            let (file, name) = match spec.as_deref().map(|s| s.split_once('#')) {
                Some(Some((file, name))) => (file, Some(name)),
                Some(None) => (spec.as_deref().unwrap_or_default(), None),
                None => continue, // a counter-example: keep as written
            };
            let Some(code) = read(file).and_then(|source| region(&source, name)) else {
                continue;
            };
            out.extend(code.lines().map(str::to_string));
            // Skip the old body up to (not including) the closing fence.
            for old in lines.by_ref() {
                if old.trim() == "```" {
                    out.push(old.to_string());
                    break;
                }
            }
        } else if !trimmed.is_empty() {
            include = None;
        }
    }
    let mut text_out = out.join("\n");
    if text.ends_with('\n') {
        text_out.push('\n');
    }
    text_out
}

/// Every quote in docs/ and README.md is exactly the code it names, every
/// `cargo run --example` names a real example, and every relative link works.
/// With `UPDATE_DOCS=1`, quotes are first re-copied from the code.
#[test]
fn docs_quote_the_code_exactly() {
    let mut problems = Vec::new();
    let mut compared = 0;
    let update = std::env::var_os("UPDATE_DOCS").is_some_and(|v| v == "1");
    for doc in doc_files() {
        if update {
            let text = read_crate_file(&doc).expect("doc is readable");
            let fresh = requote(&text, &read_crate_file);
            if fresh != text {
                let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(&doc);
                std::fs::write(&path, fresh).expect("rewrite doc");
                eprintln!("UPDATE_DOCS: re-quoted {doc}");
            }
        }
        let text = read_crate_file(&doc).expect("doc is readable");
        let report = check_doc(&doc, &text, &read_crate_file);
        problems.extend(report.problems);
        compared += report.compared;
    }
    assert!(problems.is_empty(), "docs out of step with the code:\n{}", problems.join("\n"));
    assert!(compared > 0, "no quoted code found in docs/: is the marker syntax right?");
}

/// `mdbook build docs` shows every chapter: SUMMARY.md lists each docs/*.md
/// (README.md is the book's introduction), the numbered ones in order.
#[test]
fn summary_lists_every_chapter() {
    let chapters: Vec<String> = doc_files()
        .iter()
        .filter_map(|doc| doc.strip_prefix("docs/"))
        .filter(|name| *name != "SUMMARY.md")
        .map(String::from)
        .collect();
    assert!(chapters.iter().any(|name| is_numbered_chapter(name)), "no docs/NN-*.md found");
    let summary = read_crate_file("docs/SUMMARY.md").expect("docs/SUMMARY.md exists");
    let problems = check_summary(&summary, &chapters);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// The checks below feed the checker in-memory files, so that it is known to
// fail when it should: a checker that passes everything would be worse than none.

const LIB: &str = "\
pub struct A;
impl A {
    // ANCHOR: new
    pub fn new() -> A {
        // ANCHOR: body
        A
        // ANCHOR_END: body
    }
    // ANCHOR_END: new
}
";

/// A chapter that `docs/01-test.md` links to: two "Run it" headings, and a
/// line in a fenced block that only looks like one.
const OTHER: &str = "\
# 2. Other chapter (其他)

## Run it

```text
# 1. not a heading
```

## Run it ##

### [`send`](../src/a.rs) *now*, in C#
";

/// Checks `doc` as docs/01-test.md, next to docs/02-other.md, src/a.rs and
/// examples/demo.rs.
fn check_in_memory(doc: &str) -> Report {
    let files: HashMap<&str, &str> = HashMap::from([
        ("src/a.rs", LIB),
        ("src/a.lua", LUA),
        ("examples/demo.rs", ""),
        ("docs/02-other.md", OTHER),
        ("docs/01-test.md", doc),
    ]);
    check_doc("docs/01-test.md", doc, &|path| files.get(path).map(|text| text.to_string()))
}

/// A region drops nested anchor lines and the indentation they all share.
#[test]
fn region_removes_nested_anchors_and_common_indentation() {
    assert_eq!(region(LIB, Some("new")).unwrap(), "pub fn new() -> A {\n    A\n}");
    assert_eq!(region(LIB, Some("body")).unwrap(), "A");
    assert_eq!(region(LIB, Some("missing")), None);
    assert!(!region(LIB, None).unwrap().contains("ANCHOR"));
}

/// An exact quote passes; changing one line of it fails, naming the doc
/// line and both versions of the first line that differs.
#[test]
fn a_changed_line_in_a_quote_is_reported() {
    let exact =
        "Text.\n\n<!-- include: src/a.rs#new -->\n\n```rust\npub fn new() -> A {\n    A\n}\n```\n";
    let report = check_in_memory(exact);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.compared, 1);

    let changed = exact.replace("    A\n", "    A::default()\n");
    let problems = check_in_memory(&changed).problems;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("docs/01-test.md:7: block differs from src/a.rs#new"));
    assert!(problems[0].contains(r#"doc:  "    A::default()""#), "{}", problems[0]);
    assert!(problems[0].contains(r#"code: "    A""#), "{}", problems[0]);

    let shorter = exact.replace("    A\n}\n", "    A\n");
    let problems = check_in_memory(&shorter).problems;
    assert!(problems[0].contains("(nothing: the block ends here)"), "{problems:?}");
}

/// Each kind of mistake is reported, on the line where it is.
#[test]
fn every_kind_of_mistake_is_reported() {
    let cases = [
        ("```rust\nfn main() {}\n```\n", "docs/01-test.md:1: ```rust block without a marker"),
        ("<!-- include: src/gone.rs#new -->\n```rust\n```\n", "src/gone.rs does not exist"),
        ("<!-- include: src/a.rs#nope -->\n```rust\n```\n", "src/a.rs has no region"),
        ("<!-- include: src/a.rs#new -->\nSome text.\n", ":1: marker is not followed by"),
        ("<!-- include: src/a.rs#new -->\n```text\n```\n", ":1: marker is not followed by"),
        ("```\nfn main() {}\n```\n", "fenced block without a language"),
        ("```text\ncargo run --example nope\n```\n", ":2: `cargo run --example nope`"),
        ("Run `cargo run --example=nope`.", "there is no examples/nope.rs"),
        ("运行 `cargo run --example nope`（第一版）", "there is no examples/nope.rs"),
        ("See [a](../src/b.rs).", "link to ../src/b.rs: src/b.rs does not exist"),
        ("See [a](02-other.md#run-it-2).", "docs/02-other.md has no heading with the anchor"),
        ("See [a](02-other.md#1-not-a-heading).", "has no heading with the anchor #1-not"),
        ("# Top\nSee [a](#bottom).", "docs/01-test.md has no heading with the anchor #bottom"),
        ("See [a](../src/a.rs#L2).", "an anchor can only be checked against the headings"),
    ];
    for (doc, expected) in cases {
        let problems = check_in_memory(doc).problems;
        assert!(
            problems.len() == 1 && problems[0].contains(expected),
            "doc {doc:?}: expected one problem containing {expected:?}, got {problems:?}"
        );
    }
    let fine = "# Top\n<!-- counter-example -->\n```rust\nloop {}\n```\n\
                `cargo run --example demo` [a](../src/a.rs) [w](https://x.org) [s](#top)\n\
                [o](02-other.md#run-it-1) [w](https://x.org/a.md#nowhere)\n";
    let report = check_in_memory(fine);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// Anchors are made from the heading's text as GitHub and mdBook make them
/// (mdBook 0.5.4 gives these same ids to OTHER's headings).
#[test]
fn heading_anchors_follow_github_and_mdbook() {
    assert_eq!(
        heading_anchors(OTHER),
        ["2-other-chapter-其他", "run-it", "run-it-1", "send-now-in-c"]
    );
}

/// SUMMARY.md that leaves out a chapter, or lists numbered chapters out of
/// order, is reported; README.md counts as a chapter like the others.
#[test]
fn a_summary_missing_or_misordering_a_chapter_is_reported() {
    let chapters = ["01-a.md", "02-b.md", "README.md"].map(String::from);
    let fine = "# Summary\n\n[Introduction](README.md)\n\n- [A](01-a.md)\n- [B](./02-b.md)\n";
    assert!(check_summary(fine, &chapters).is_empty(), "{:?}", check_summary(fine, &chapters));

    let missing = fine.replace("[Introduction](README.md)", "");
    assert_eq!(
        check_summary(&missing, &chapters),
        ["docs/SUMMARY.md does not list docs/README.md"]
    );

    let two_pages = ["01-a.md", "02-b.md", "02-a.md", "README.md"].map(String::from);
    let nested = format!("{fine}  - [B, inside](02-a.md)\n");
    assert!(
        check_summary(&nested, &two_pages).is_empty(),
        "{:?}",
        check_summary(&nested, &two_pages)
    );

    let swapped = "[I](README.md)\n- [B](02-b.md)\n- [A](01-a.md)\n";
    let problems = check_summary(swapped, &chapters);
    assert!(problems.len() == 1 && problems[0].contains("out of order"), "{problems:?}");
}

/// Re-quoting replaces a stale quote with the region, and leaves
/// counter-examples and prose alone.
#[test]
fn requote_refreshes_stale_quotes_only() {
    let files: HashMap<&str, &str> = HashMap::from([("src/a.rs", LIB)]);
    let read = |path: &str| files.get(path).map(|text| text.to_string());
    let doc = "Intro.\n\n<!-- include: src/a.rs#body -->\n\n```rust\nB\nold line\n```\n\n\
               <!-- counter-example -->\n```rust\nnaive()\n```\n";
    let fresh = requote(doc, &read);
    assert_eq!(
        fresh,
        "Intro.\n\n<!-- include: src/a.rs#body -->\n\n```rust\nA\n```\n\n\
         <!-- counter-example -->\n```rust\nnaive()\n```\n"
    );
    assert!(check_in_memory(&fresh).problems.is_empty());
}

const LUA: &str = "-- KEYS: a counter.\nreturn redis.call('INCR', KEYS[1])\n";

/// A Redis script is quoted whole in a ```lua block, checked and re-quoted
/// like Rust; a ```lua block without a marker is reported, as a ```rust
/// one is.
#[test]
fn a_lua_script_is_quoted_like_rust() {
    let exact = "<!-- include: src/a.lua -->\n\n```lua\n-- KEYS: a counter.\n\
                 return redis.call('INCR', KEYS[1])\n```\n";
    let report = check_in_memory(exact);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.compared, 1);

    let changed = exact.replace("INCR", "DECR");
    let problems = check_in_memory(&changed).problems;
    assert!(problems.len() == 1 && problems[0].contains("block differs from src/a.lua"));
    let files: HashMap<&str, &str> = HashMap::from([("src/a.lua", LUA)]);
    assert_eq!(requote(&changed, &|path| files.get(path).map(|t| t.to_string())), exact);

    let bare = "```lua\nreturn 1\n```\n";
    let problems = check_in_memory(bare).problems;
    assert!(problems.len() == 1 && problems[0].contains("```lua block without a marker"));
}

// ---------------------------------------------------------------------------
// A chapter's code meets only what has been taught

/// Names that a chapter introduces, and that the code quoted in an earlier
/// chapter must not use: a reader of chapter 2 has not met the cluster of
/// chapter 9 or the admission, tokens and TLS of chapter 10. Matched as
/// whole words in the code of a quote, its comments aside (a comment may
/// point ahead: "chapter 9 adds ...").
const TAUGHT_LATER: [(u32, &[&str]); 2] = [
    (9, &["Cluster", "cluster", "redis", "Relayed", "relay", "Departure"]),
    (
        10,
        &[
            "Admission",
            "admission",
            "PerIp",
            "max_per_ip",
            "allowed_origins",
            "TrustedProxies",
            "TlsArgs",
            "TlsAcceptor",
            "tls",
            "Secret",
            "token",
            "connect_with",
            "connect_with_token",
            "admin",
            "AdminArgs",
        ],
    ),
];

/// Quotes that use a name of a later chapter: none since every quote was
/// cut down to what its chapter teaches (issue "Teach in layers"). The list
/// may only shrink, so it stays empty: a quote that uses a later name fails
/// the test.
const NOT_YET_LAYERED: [(&str, &str, &str); 0] = [];

/// The chapter number of `docs/NN-name.md`.
fn chapter_number(doc: &str) -> Option<u32> {
    let name = doc.strip_prefix("docs/")?;
    name.get(..2)?.parse().ok().filter(|_| is_numbered_chapter(name))
}

/// Whether `word` occurs in `code` as a whole word (letters, digits and `_`
/// around it do not count as its boundary).
fn has_word(code: &str, word: &str) -> bool {
    let is_part = |c: char| c.is_alphanumeric() || c == '_';
    code.match_indices(word).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = code[at + word.len()..].chars().next();
        !before.is_some_and(is_part) && !after.is_some_and(is_part)
    })
}

/// (quote, later name) for each name of a later chapter that the code
/// quoted in `doc` (chapter `chapter`) uses, comments aside.
fn later_names_in(text: &str, chapter: u32) -> Vec<(String, &'static str)> {
    let mut found = Vec::new();
    let mut quote: Option<String> = None;
    let mut in_block = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(spec) =
            trimmed.strip_prefix("<!-- include:").and_then(|c| c.strip_suffix("-->"))
        {
            quote = Some(spec.trim().to_string());
        } else if trimmed == "```rust" {
            in_block = true;
        } else if in_block && trimmed == "```" {
            in_block = false;
            quote = None;
        } else if in_block && let Some(spec) = &quote {
            let code = line.split("//").next().unwrap_or_default();
            for (_, names) in TAUGHT_LATER.iter().filter(|(later, _)| *later > chapter) {
                for name in names.iter().filter(|name| has_word(code, name)) {
                    if !found.iter().any(|(q, n)| q == spec && n == name) {
                        found.push((spec.clone(), *name));
                    }
                }
            }
        }
    }
    found
}

/// The code a chapter quotes uses nothing a later chapter introduces, but
/// for the quotes still listed in [`NOT_YET_LAYERED`], which may only go.
#[test]
fn a_chapters_quotes_use_nothing_a_later_chapter_teaches() {
    let mut problems = Vec::new();
    let mut seen = Vec::new();
    for doc in doc_files() {
        let Some(chapter) = chapter_number(&doc) else { continue };
        let text = read_crate_file(&doc).expect("doc is readable");
        for (quote, name) in later_names_in(&text, chapter) {
            let known =
                NOT_YET_LAYERED.iter().any(|(d, q, n)| *d == doc && *q == quote && *n == name);
            if known {
                seen.push((doc.clone(), quote, name));
            } else {
                let (later, _) =
                    TAUGHT_LATER.iter().find(|(_, names)| names.contains(&name)).unwrap();
                problems.push(format!(
                    "{doc}: the quote of {quote} uses `{name}`, which chapter {later} introduces"
                ));
            }
        }
    }
    for (doc, quote, name) in NOT_YET_LAYERED {
        if !seen.iter().any(|(d, q, n)| d == doc && q == quote && *n == name) {
            problems.push(format!(
                "{doc}: the quote of {quote} no longer uses `{name}`: take it off NOT_YET_LAYERED"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_later_name_in_code_is_found_and_one_in_a_comment_is_not() {
    let doc = "\
<!-- include: examples/demo.rs#run -->

```rust
let cluster = Cluster::start(redis).await; // chapter 9
// with chapter 10's admission
let clustered = 1;
```
";
    let found = later_names_in(doc, 6);
    let names: Vec<&str> = found.iter().map(|(_, name)| *name).collect();
    assert_eq!(names, ["Cluster", "cluster", "redis"], "whole words of code only");
    assert!(later_names_in(doc, 9).is_empty(), "chapter 9 may use its own names");
    assert!(has_word("tls::Stream", "tls") && !has_word("TlsStream", "tls"));
}
