//! The README cannot drift from the tested code: every `<!-- snippet: PATH -->` marker in
//! README.md must be followed (after blank lines at most) by a fenced code block whose content
//! equals the file PATH (repository-relative) — the whole file, or, when the file has a line
//! ending in `snippet-start` (e.g. `// snippet-start`, `# snippet-start`), exactly the lines
//! between it and the next line ending in `snippet-end`. The snippet files are run by
//! drivers.rs, tokio_postgres_snippet.rs, pgbouncer.rs and crates/event_store_client's tests.
//! Needs no database.

use std::fs;

use event_store_client_tests::repo_dir;

const MARKER_START: &str = "<!-- snippet: ";
const MARKER_END: &str = " -->";

/// The files the "Clients" section must show.
const EXPECTED: [&str; 5] = [
    "crates/event_store_client/examples/sqlx_plain.rs",
    "tests/client/tests/tokio_postgres_snippet.rs",
    "tests/drivers/python/psycopg_example.py",
    "tests/drivers/python/asyncpg_example.py",
    "tests/drivers/node/pg_example.js",
];

/// A marker and the fenced block after it.
struct Shown {
    path: String,
    line: usize,
    block: Result<String, String>,
}

/// Every marker of `readme`, with the content of the fenced block that follows it.
fn shown(readme: &str) -> Vec<Shown> {
    let lines: Vec<&str> = readme.lines().collect();
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
        .ok_or("the README ends after the marker")?
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

/// What the README must show of a file: between the snippet markers, or all of it.
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
fn first_difference(readme: &str, file: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (readme.lines().collect(), file.lines().collect());
    for i in 0..a.len().max(b.len()) {
        if a.get(i) != b.get(i) {
            return format!(
                "line {} of the block: README has {:?}, the file has {:?}",
                i + 1,
                a.get(i),
                b.get(i)
            );
        }
    }
    "only in trailing whitespace".to_owned()
}

#[test]
fn every_readme_snippet_equals_its_file() {
    let readme_path = repo_dir().join("README.md");
    let readme = fs::read_to_string(&readme_path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", readme_path.display()));
    let found = shown(&readme);
    let mut problems = Vec::new();
    for path in EXPECTED {
        if !found.iter().any(|s| s.path == path) {
            problems.push(format!("README.md has no <!-- snippet: {path} --> marker"));
        }
    }
    for s in &found {
        let at = format!("README.md:{} ({})", s.line, s.path);
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
                "{at}: the README's block differs from the file: {} (copy the file's {} \
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
        "README snippets out of date:\n{}",
        problems.join("\n")
    );
    eprintln!("{} README snippets match their files", found.len());
}

#[test]
fn the_checker_reads_markers_fences_and_regions() {
    let readme =
        "x\n<!-- snippet: a.rs -->\n\n```rust\nfn a() {}\n```\n<!-- snippet: b.py -->\ntext\n";
    let found = shown(readme);
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].path, "a.rs");
    assert_eq!(found[0].block.as_deref(), Ok("fn a() {}\n"));
    assert!(found[1].block.is_err(), "a marker without a fence");
    let file = "//! doc\nuse x;\n// snippet-start\nfn a() {}\n// snippet-end\n#[test]\n";
    assert_eq!(region(file).as_deref(), Ok("fn a() {}\n"));
    assert_eq!(region("a\nb\n").as_deref(), Ok("a\nb\n"));
}
