//! The documentation cannot drift from the repository. Needs no database.
//!
//! - Snippets: every `<!-- snippet: PATH -->` marker in README.md, docs/*.md or the client
//!   crate's README must be followed
//!   (after blank lines at most) by a fenced code block whose content equals the file PATH
//!   (repository-relative) — the whole file, or, when the file has a line ending in
//!   `snippet-start` (e.g. `// snippet-start`, `-- snippet-start`), exactly the lines between it
//!   and the next line ending in `snippet-end`; and every file of `EXPECTED` is shown somewhere.
//!   The snippet files are run by drivers.rs, tokio_postgres_snippet.rs, pgbouncer.rs, cdc.rs,
//!   the pg_regress files `readme_*` and crates/event_store_client's tests.
//! - Links: every relative link of README.md, ARCHITECTURE.md, CHANGELOG.md and docs/*.md names a
//!   file of the repository, and its `#anchor`, when it has one, a heading of that page.
//! - Citations: every `docs/….md` path that the code, SQL, tests and scripts name exists, and every
//!   `docs/reference.md §N` names a section heading of docs/reference.md (`## 7b.`, `### 13.1`).
//! - Pictures: each docs/diagrams/NAME.svg is what Graphviz makes of NAME.dot
//!   (`scripts/diagrams.sh` regenerates them; `dot` comes with scripts/setup.sh).

use std::fs;
use std::path::{Path, PathBuf};

use event_store_client_tests::repo_dir;

const MARKER_START: &str = "<!-- snippet: ";
const MARKER_END: &str = " -->";

/// The files the docs must show (each is run by a test, so a shown snippet is a working one).
const EXPECTED: [&str; 9] = [
    "crates/event_store_client/examples/sqlx_plain.rs",
    "crates/event_store_client/examples/consumer.rs",
    "tests/client/tests/tokio_postgres_snippet.rs",
    "tests/drivers/python/psycopg_example.py",
    "tests/drivers/python/asyncpg_example.py",
    "tests/drivers/node/pg_example.js",
    "tests/pg_regress/expected/readme_audit.out",
    "tests/pg_regress/sql/readme_types.sql",
    "scripts/cdc.sh",
];

/// A marker and the fenced block after it.
struct Shown {
    path: String,
    line: usize,
    block: Result<String, String>,
}

/// README.md, every page of docs/ and the client crate's README, repository-relative, in a
/// stable order.
fn doc_pages() -> Vec<String> {
    let mut pages = vec!["README.md".to_owned()];
    let mut docs: Vec<String> = fs::read_dir(repo_dir().join("docs"))
        .expect("docs/ exists")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages.push("crates/event_store_client/README.md".to_owned());
    pages
}

/// The pages whose links must resolve.
fn linked_pages() -> Vec<String> {
    let mut pages = doc_pages();
    pages.insert(1, "ARCHITECTURE.md".to_owned());
    pages.insert(2, "CHANGELOG.md".to_owned());
    pages
}

fn read(rel: &str) -> String {
    let path = repo_dir().join(rel);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every marker of `page`, with the content of the fenced block that follows it.
fn shown(page: &str) -> Vec<Shown> {
    let lines: Vec<&str> = page.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.trim().strip_prefix(MARKER_START) else {
            continue;
        };
        let path = rest
            .strip_suffix(MARKER_END)
            .unwrap_or(rest)
            .trim()
            .to_owned();
        found.push(Shown {
            path,
            line: i + 1,
            block: fenced_after(&lines, i + 1),
        });
    }
    found
}

/// The content of the fenced code block starting at the first non-blank line from `from`.
fn fenced_after(lines: &[&str], from: usize) -> Result<String, String> {
    let mut i = from;
    while i < lines.len() && lines[i].trim().is_empty() {
        i += 1;
    }
    let open = lines
        .get(i)
        .ok_or("the page ends after the marker")?
        .trim_end();
    let fence: String = open.chars().take_while(|&c| c == '`').collect();
    if fence.len() < 3 {
        return Err(format!(
            "line {} should open a ``` fence, found {open:?}",
            i + 1
        ));
    }
    let mut body = String::new();
    for line in &lines[i + 1..] {
        if line.trim_end() == fence {
            return Ok(body);
        }
        body.push_str(line);
        body.push('\n');
    }
    Err(format!(
        "the fence opened at line {} is never closed",
        i + 1
    ))
}

/// What the docs must show of a file: between the snippet markers, or all of it.
fn region(text: &str) -> Result<String, String> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim_end().ends_with("snippet-start"));
    let Some(start) = start else {
        return Ok(lines.iter().map(|l| format!("{l}\n")).collect());
    };
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.trim_end().ends_with("snippet-end"))
        .ok_or("a snippet-start without a snippet-end")?;
    Ok(lines[start + 1..start + 1 + end]
        .iter()
        .map(|l| format!("{l}\n"))
        .collect())
}

/// The first line where two texts differ, for the failure message.
fn first_difference(shown: &str, file: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (shown.lines().collect(), file.lines().collect());
    for i in 0..a.len().max(b.len()) {
        if a.get(i) != b.get(i) {
            return format!(
                "line {} of the block: the page has {:?}, the file has {:?}",
                i + 1,
                a.get(i),
                b.get(i)
            );
        }
    }
    "only in trailing whitespace".to_owned()
}

#[test]
fn every_doc_snippet_equals_its_file() {
    let mut problems = Vec::new();
    let mut all = Vec::new();
    for page in doc_pages() {
        for s in shown(&read(&page)) {
            all.push((page.clone(), s));
        }
    }
    for path in EXPECTED {
        if !all.iter().any(|(_, s)| s.path == path) {
            problems.push(format!(
                "no page of README.md or docs/ has a <!-- snippet: {path} --> marker"
            ));
        }
    }
    for (page, s) in &all {
        let at = format!("{page}:{} ({})", s.line, s.path);
        let block = match &s.block {
            Ok(block) => block,
            Err(why) => {
                problems.push(format!("{at}: {why}"));
                continue;
            }
        };
        let file = match fs::read_to_string(repo_dir().join(&s.path)) {
            Ok(text) => text,
            Err(e) => {
                problems.push(format!("{at}: cannot read the file: {e}"));
                continue;
            }
        };
        match region(&file) {
            Ok(want) if want == *block => {}
            Ok(want) => problems.push(format!(
                "{at}: the page's block differs from the file: {} (copy the file's {} \
                 into the block)",
                first_difference(block, &want),
                if want.len() == file.len() {
                    "content"
                } else {
                    "snippet region"
                }
            )),
            Err(why) => problems.push(format!("{at}: {why}")),
        }
    }
    assert!(
        problems.is_empty(),
        "doc snippets out of date:\n{}",
        problems.join("\n")
    );
    eprintln!("{} doc snippets match their files", all.len());
}

/// The anchor GitHub gives a heading: lowercase, punctuation dropped (letters, digits, `_`, `-`
/// and spaces kept), spaces turned into `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|&c| c.is_alphanumeric() || c == '_' || c == '-' || c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The lines of a page outside fenced code blocks, with their line numbers.
fn prose(page: &str) -> Vec<(usize, &str)> {
    let mut fence: Option<String> = None;
    let mut out = Vec::new();
    for (i, line) in page.lines().enumerate() {
        let t = line.trim_start();
        let ticks: String = t.chars().take_while(|&c| c == '`' || c == '~').collect();
        if ticks.len() >= 3 {
            match &fence {
                None => {
                    fence = Some(ticks);
                    continue;
                }
                Some(open) if t.trim_end() == open => {
                    fence = None;
                    continue;
                }
                Some(_) => {}
            }
        }
        if fence.is_none() {
            out.push((i + 1, line));
        }
    }
    out
}

/// The anchors of a page's headings (a repeated heading gets `-1`, `-2`, … as on GitHub).
fn anchors(page: &str) -> Vec<String> {
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut out = Vec::new();
    for (_, line) in prose(page) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(&line[hashes..]);
        let n = seen.entry(base.clone()).or_insert(0);
        out.push(if *n == 0 { base } else { format!("{base}-{n}") });
        *n += 1;
    }
    out
}

/// A line without its inline code spans (`…`), where a `](` is not a link.
fn without_code(line: &str) -> String {
    let mut out = String::new();
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
        } else if !in_code {
            out.push(c);
        }
    }
    out
}

/// The targets of the Markdown links (and images) of a page's prose: `[text](target)`.
fn links(page: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in prose(page) {
        let line = without_code(line);
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let end = after.find([')', ' ']).unwrap_or(after.len());
            out.push((n, after[..end].to_owned()));
            rest = &after[end..];
        }
    }
    out
}

/// Why `target`, linked from the page `from` (repository-relative), does not resolve.
fn broken(from: &str, target: &str) -> Option<String> {
    if target.contains("://") || target.starts_with("mailto:") {
        return None;
    }
    let (path, anchor) = match target.split_once('#') {
        Some((p, a)) => (p, Some(a)),
        None => (target, None),
    };
    let dir = Path::new(from).parent().unwrap_or(Path::new(""));
    let rel: PathBuf = if path.is_empty() {
        PathBuf::from(from)
    } else {
        match normalize(&dir.join(path)) {
            Some(rel) => rel,
            None => return Some("it leaves the repository".to_owned()),
        }
    };
    let file = repo_dir().join(&rel);
    if !file.exists() {
        return Some(format!("{} does not exist", rel.display()));
    }
    let anchor = anchor?;
    if !rel.to_string_lossy().ends_with(".md") {
        return None;
    }
    let text = fs::read_to_string(&file).ok()?;
    if anchors(&text).iter().any(|a| a == anchor) {
        None
    } else {
        Some(format!("{} has no heading #{anchor}", rel.display()))
    }
}

/// `a/b/../c` as `a/c`; None when it climbs out of the repository.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    Some(out)
}

#[test]
fn every_relative_link_of_the_docs_resolves() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for page in linked_pages() {
        for (line, target) in links(&read(&page)) {
            checked += 1;
            if let Some(why) = broken(&page, &target) {
                problems.push(format!("{page}:{line}: ({target}): {why}"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "links that do not resolve:\n{}",
        problems.join("\n")
    );
    eprintln!("{checked} links resolve");
}

/// The section numbers of docs/reference.md: `0`, `7b`, `13`, `13.1`, … of its `##`/`###` headings.
fn reference_sections() -> Vec<String> {
    let text = read("docs/reference.md");
    let mut out = Vec::new();
    for (_, line) in prose(&text) {
        let Some(title) = line
            .strip_prefix("## ")
            .or_else(|| line.strip_prefix("### "))
        else {
            continue;
        };
        let number: String = title
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '.')
            .collect();
        let number = number.trim_end_matches('.');
        if number.starts_with(|c: char| c.is_ascii_digit()) {
            out.push(number.to_owned());
        }
    }
    out
}

/// The repository's own text files (not what builds and tests write).
fn repository_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if !matches!(
                name.as_str(),
                "target" | ".git" | "node_modules" | "venv" | "results" | "__pycache__"
            ) {
                repository_files(&path, out);
            }
        } else if [
            ".rs", ".sql", ".sh", ".py", ".js", ".md", ".toml", ".out", ".control", ".dot", "run",
        ]
        .iter()
        .any(|ext| name.ends_with(ext))
        {
            out.push(path);
        }
    }
}

/// The `docs/….md` paths a text names, each with what follows it.
fn doc_citations(text: &str) -> Vec<(String, &str)> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(at) = text[from..].find("docs/") {
        let start = from + at;
        from = start + 5;
        let before = start.checked_sub(1).map(|i| bytes[i]);
        if before.is_some_and(|b| b.is_ascii_alphanumeric() || b"_-/.".contains(&b)) {
            continue;
        }
        let len = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || "_-/.".contains(c)))
            .unwrap_or(text.len() - start);
        let path = text[start..start + len].trim_end_matches('.');
        if path.ends_with(".md") {
            out.push((path.to_owned(), &text[start + path.len()..]));
        }
    }
    out
}

#[test]
fn every_cited_doc_and_reference_section_exists() {
    let repo = repo_dir();
    let sections = reference_sections();
    for wanted in ["0", "6", "7b", "8", "13", "13.1", "13.4", "14"] {
        assert!(
            sections.iter().any(|s| s == wanted),
            "docs/reference.md has no section {wanted} (it has {sections:?})"
        );
    }
    let mut files = Vec::new();
    repository_files(&repo, &mut files);
    let (mut problems, mut cited) = (Vec::new(), 0);
    for file in &files {
        let Ok(text) = fs::read_to_string(file) else {
            continue;
        };
        let rel = file
            .strip_prefix(&repo)
            .unwrap_or(file)
            .display()
            .to_string();
        if rel == "tests/client/tests/doc_snippets.rs" {
            continue; // its own examples of citations, some of files that do not exist
        }
        for (path, after) in doc_citations(&text) {
            cited += 1;
            if !repo.join(&path).is_file() {
                problems.push(format!("{rel}: cites {path}, which does not exist"));
                continue;
            }
            if path != "docs/reference.md" {
                continue;
            }
            let Some(section) = after.trim_start().strip_prefix('§') else {
                continue;
            };
            let number: String = section
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '.')
                .collect();
            // a sentence may end right after the number (`§6.`); `§N` describes the form
            let number = number.trim_end_matches('.');
            if !number.starts_with(|c: char| c.is_ascii_digit()) {
                continue;
            }
            if !sections.iter().any(|s| s == number) {
                problems.push(format!(
                    "{rel}: cites docs/reference.md §{number}, which is not a section of it"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "citations of files or sections that do not exist:\n{}",
        problems.join("\n")
    );
    eprintln!(
        "{cited} citations of docs/ in {} files resolve",
        files.len()
    );
}

/// SVG as `scripts/diagrams.sh` writes it: without graphviz's version comment.
fn without_version_comment(svg: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in svg.lines() {
        if line.starts_with("<!-- Generated by graphviz") {
            skipping = true;
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
        if skipping && line.contains("-->") {
            skipping = false;
        }
    }
    out
}

#[test]
fn every_diagram_is_what_its_source_gives() {
    let dir = repo_dir().join("docs/diagrams");
    let mut sources: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("docs/diagrams exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "dot"))
        .collect();
    sources.sort();
    assert!(!sources.is_empty(), "no .dot file in docs/diagrams");
    for source in sources {
        let made = std::process::Command::new("dot")
            .arg("-Tsvg")
            .arg(&source)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run dot ({e}): install graphviz (bash scripts/setup.sh does)")
            });
        assert!(
            made.status.success(),
            "dot failed on {}: {}",
            source.display(),
            String::from_utf8_lossy(&made.stderr)
        );
        let svg = source.with_extension("svg");
        let committed = fs::read_to_string(&svg)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", svg.display()));
        assert!(
            without_version_comment(&String::from_utf8_lossy(&made.stdout))
                == without_version_comment(&committed),
            "{} is not what {} gives: run bash scripts/diagrams.sh and commit the SVG",
            svg.display(),
            source.display()
        );
    }
}

#[test]
fn the_checkers_read_markers_fences_regions_links_and_citations() {
    let page =
        "x\n<!-- snippet: a.rs -->\n\n```rust\nfn a() {}\n```\n<!-- snippet: b.py -->\ntext\n";
    let found = shown(page);
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].path, "a.rs");
    assert_eq!(found[0].block.as_deref(), Ok("fn a() {}\n"));
    assert!(found[1].block.is_err(), "a marker without a fence");
    let file = "//! doc\nuse x;\n// snippet-start\nfn a() {}\n// snippet-end\n#[test]\n";
    assert_eq!(region(file).as_deref(), Ok("fn a() {}\n"));
    assert_eq!(region("a\nb\n").as_deref(), Ok("a\nb\n"));

    assert_eq!(
        slug(" Rust: `event_store_client` (recommended)"),
        "rust-event_store_client-recommended"
    );
    assert_eq!(slug(" 7b. Security"), "7b-security");
    assert_eq!(
        slug(" Major-version upgrade (`pg_upgrade`, PostgreSQL 15 → 18)"),
        "major-version-upgrade-pg_upgrade-postgresql-15--18"
    );
    let page = "# A\n## B\n```\n## not a heading [x](nowhere.md)\n```\n## B\nsee [b](#b-1), `[c](d)`, ![e](f.svg)\n";
    assert_eq!(anchors(page), ["a", "b", "b-1"]);
    assert_eq!(
        links(page).into_iter().map(|(_, t)| t).collect::<Vec<_>>(),
        ["#b-1", "f.svg"]
    );
    assert_eq!(broken("docs/x.md", "https://example.org/y"), None);
    assert!(broken("docs/x.md", "../../outside.md").is_some());
    assert_eq!(broken("docs/reference.md", "#6-errors"), None);
    assert!(broken("docs/reference.md", "#no-such-heading").is_some());

    let text = "see docs/reference.md §13.1 and docs/reference.md §6. Also /usr/share/docs/x.md and docs/a.md.";
    let cited = doc_citations(text);
    assert_eq!(
        cited.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
        ["docs/reference.md", "docs/reference.md", "docs/a.md"]
    );
    assert!(cited[0].1.starts_with(" §13.1"));
    assert_eq!(
        without_version_comment(
            "<?xml?>\n<!-- Generated by graphviz version 2.43.0 (0)\n -->\n<svg/>\n"
        ),
        "<?xml?>\n<svg/>\n"
    );
}
