#!/usr/bin/env python3
"""The rules of ARCHITECTURE.md, checked against the extension's source (src/**/*.rs).

Fails (exit 1, one line per breach) when
  - a module imports a layer it may not (`use crate::…` or any `crate::…` path in code): the
    allowed directions are ALLOWED below, the same as ARCHITECTURE.md's "The layers of the
    extension";
  - two modules (files) import each other;
  - `unsafe` appears outside the folders UNSAFE_ALLOWED names;
  - a module exists that ARCHITECTURE.md's layer table does not list, or the table lists one
    that does not exist.

Why a script: a rule only a document states drifts from the code (issue 22 found four such
drifts); this runs among the style gates of scripts/test.sh, with --self-test first (a tiny tree
with one breach of each kind, which it must catch).

usage: scripts/check_architecture.py [--root DIR] [--self-test]
"""

import os
import re
import sys
import tempfile

# Which layer a file is in: the longest matching prefix of its path under src/ wins. A prefix
# that matches nothing is fine (a folder that moved away: `telemetry/` is now the crate
# `event_store_telemetry`); moving a folder is a change of this table alone.
LAYERS = {
    "lib.rs": "root",
    "api/": "api",
    "store/": "store",
    "pg/": "pg",
    "trace/": "trace",
    "telemetry/": "telemetry",
    "workers/": "workers",
}

# What each layer may import besides itself (the pure crate `event_store_core` is not `crate::`
# and always allowed). The crate root declares the modules and may use any.
ALLOWED = {
    "api": {"store", "pg", "trace"},
    "workers": {"store", "pg", "trace", "telemetry"},
    "store": {"pg"},
    "trace": {"telemetry", "pg"},
    "pg": set(),
    "telemetry": set(),
    "root": {"api", "store", "pg", "trace", "telemetry", "workers"},
}

# Where `unsafe` may be written (prefixes of paths under src/), as ARCHITECTURE.md says: the
# PostgreSQL glue, the backend side of tracing, the background workers, the crate root
# (`_PG_init` and the `#[pg_test]`s of the SQL glue) and, should it come back into src/, the span
# model's lock-free ring (now the crate `event_store_telemetry`).
UNSAFE_ALLOWED = ("pg/", "trace/", "workers/", "lib.rs", "telemetry/")

# `crate::tests` is the crate root's test module (helpers of the #[pg_test]s): any layer's tests
# may use it.
TEST_MODULES = {"tests"}


def layer_of(rel):
    best = None
    for prefix, layer in LAYERS.items():
        if rel == prefix or (prefix.endswith("/") and rel.startswith(prefix)):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, layer)
    return best[1] if best else None


def strip_comments_and_strings(text):
    """The code of a Rust file without comments, string and char literals (replaced by spaces,
    so `unsafe` or `crate::` inside them does not count)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif re.match(r'(?:b|c)?r(#*)"', text[i:i + 4]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'(?:b|c)?r(#*)"', text[i:])
            close = '"' + m.group(1)
            j = text.find(close, i + m.end())
            i = n if j < 0 else j + len(close)
            out.append(' "" ')
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            i = j + 1
            out.append(' "" ')
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4]):
            m = re.match(r"'(\\.|[^\\'])'", text[i:])
            i += m.end()
            out.append(" ' ' ")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def expand_use(tree):
    """The paths of a use tree: `a::{b, c::{d, e}}` -> a::b, a::c::d, a::c::e."""
    tree = re.sub(r"\s+", "", tree)
    m = re.match(r"^(.*?)\{(.*)\}$", tree)
    if not m:
        return [re.sub(r"as\w+$", "", tree.split(" as ")[0])]
    prefix, inner = m.group(1), m.group(2)
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    if cur:
        parts.append(cur)
    return [p for part in parts if part for p in expand_use(prefix + part)]


def module_file(src, segments):
    """The file (relative to src/) a path `crate::a::b::…` is in: the longest existing module."""
    best = None
    for k in range(1, len(segments) + 1):
        base = "/".join(segments[:k])
        for candidate in (base + ".rs", base + "/mod.rs"):
            if os.path.isfile(os.path.join(src, candidate)):
                best = candidate
    return best


def imports_of(src, rel, code):
    """(module file, path) of every `crate::` and `super::` path of a file's code."""
    here = rel[:-3].split("/")
    if here[-1] == "mod":
        here = here[:-1]
    parent = here[:-1]
    paths = []
    for m in re.finditer(r"\buse\s+([^;]*);", code):
        paths.extend(expand_use(m.group(1)))
    paths.extend(m.group(0) for m in re.finditer(r"\b(?:crate|super)(?:::\w+)+", code))
    found = set()
    for p in paths:
        segs = [s for s in p.split("::") if s]
        if not segs:
            continue
        if segs[0] == "crate":
            segs = segs[1:]
        elif segs[0] == "super":
            base = list(parent)
            while segs and segs[0] == "super":
                segs = segs[1:]
                if segs and segs[0] == "super":
                    base = base[:-1]
            segs = base + segs
        else:
            continue
        if not segs:
            continue
        if segs[0] in TEST_MODULES:
            continue
        target = module_file(src, segs)
        if target and target != rel:
            found.add((target, "::".join(["crate"] + segs)))
    return found


def table_modules(architecture):
    """The layer table of ARCHITECTURE.md: {layer cell: [module names]} (the names in backticks
    outside parentheses in its second column)."""
    rows = {}
    section = architecture.split("## The layers of the extension", 1)
    if len(section) < 2:
        return rows
    for line in section[1].split("\n## ", 1)[0].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`") or cells[0] == "layer":
            continue
        names, depth, i, text = [], 0, 0, cells[1]
        while i < len(text):
            ch = text[i]
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
            elif ch == "`":
                j = text.find("`", i + 1)
                if j < 0:
                    names.append("(an unclosed backtick)")
                    break
                if depth == 0:
                    names.append(text[i + 1:j])
                i = j
            i += 1
        rows[cells[0].strip("`")] = names
    return rows


def check(root):
    src = os.path.join(root, "src")
    errors = []
    files = []
    for d, _, fs in os.walk(src):
        for f in fs:
            if f.endswith(".rs"):
                files.append(os.path.relpath(os.path.join(d, f), src).replace(os.sep, "/"))
    files.sort()
    graph = {}
    for rel in files:
        layer = layer_of(rel)
        if layer is None:
            errors.append(f"{rel}: in no layer (add its folder to LAYERS in scripts/check_architecture.py and to ARCHITECTURE.md)")
            continue
        code = strip_comments_and_strings(open(os.path.join(src, rel), encoding="utf-8").read())
        count = len(re.findall(r"\bunsafe\b", code))
        if not rel.startswith(UNSAFE_ALLOWED) and count:
            errors.append(f"{rel}: {count} `unsafe` outside {', '.join(UNSAFE_ALLOWED)} (move it into pg/ behind a safe function)")
        graph[rel] = set()
        for target, path in sorted(imports_of(src, rel, code)):
            graph[rel].add(target)
            other = layer_of(target)
            if other is None or other == layer:
                continue
            if other not in ALLOWED.get(layer, set()):
                errors.append(f"{rel}: {layer} imports {other} ({path}); {layer} may import {', '.join(sorted(ALLOWED.get(layer, ()))) or 'nothing of the extension'}")
    for a in sorted(graph):
        for b in sorted(graph[a]):
            if a < b and a in graph.get(b, ()):
                errors.append(f"{a} and {b} import each other")
    arch_path = os.path.join(root, "ARCHITECTURE.md")
    if os.path.isfile(arch_path):
        rows = table_modules(open(arch_path, encoding="utf-8").read())
        listed = set()
        for cell, names in rows.items():
            if cell.endswith("/"):
                folder = cell
                if not os.path.isdir(os.path.join(src, folder)):
                    # a folder that became a crate of its own (telemetry/ -> crates/…) is not a
                    # module of the extension any more; its row may stay while it moves
                    continue
                for name in names:
                    rel = folder + ("mod.rs" if name == "mod" else name + ".rs")
                    if not os.path.isfile(os.path.join(src, rel)) and not os.path.isfile(os.path.join(src, folder + name, "mod.rs")):
                        errors.append(f"ARCHITECTURE.md lists `{name}` in {folder}, which has no {rel}")
                    listed.add(rel)
                    listed.add(folder + name + "/mod.rs")
                listed.add(folder + "mod.rs")
                for rel in files:
                    if rel.startswith(folder) and "/" in rel[len(folder):]:
                        sub = folder + rel[len(folder):].split("/")[0]
                        if sub + "/mod.rs" in listed or sub + ".rs" in listed:
                            listed.add(rel)
            else:
                for name in names:
                    rel = name if name.endswith(".rs") else name + ".rs"
                    if not os.path.isfile(os.path.join(src, rel)):
                        errors.append(f"ARCHITECTURE.md lists `{name}`, which has no src/{rel}")
                    listed.add(rel)
        for rel in files:
            if rel != "lib.rs" and rel not in listed:
                errors.append(f"src/{rel}: not in ARCHITECTURE.md's layer table")
    else:
        errors.append("ARCHITECTURE.md is missing")
    return errors


def self_test():
    """A tiny tree with one breach of each kind: each must be reported."""
    with tempfile.TemporaryDirectory(prefix="check_architecture.") as root:
        tree = {
            "src/lib.rs": "mod api; mod store; mod pg;\n",
            "src/api/mod.rs": "pub mod entry;\n",
            "src/api/entry.rs": "use crate::store::case;\n// unsafe in a comment is fine\nfn f() { let s = \"unsafe\"; }\n",
            "src/store/mod.rs": "pub mod case;\npub mod other;\n",
            "src/store/case.rs": "use super::other::g;\nfn f() { unsafe { g() } }\n",
            "src/store/other.rs": "use crate::store::case::h;\npub fn g() {}\n",
            "src/pg/mod.rs": "pub mod glue;\npub mod extra;\n",
            "src/pg/glue.rs": "use crate::{api::entry, store::case::f};\npub unsafe fn raw() {}\n",
            "src/pg/extra.rs": "pub fn x() {}\n",
            "ARCHITECTURE.md": "## The layers of the extension\n\n| layer | modules | job | must not |\n|---|---|---|---|\n"
            "| `api/` | `entry` (the entry points) | x | y |\n| `store/` | `case`, `other`, `gone` | x | y |\n"
            "| `pg/` | `glue` | x | y |\n| `telemetry/` | `record` | x | y |\n",
        }
        for path, text in tree.items():
            full = os.path.join(root, path)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "w", encoding="utf-8") as f:
                f.write(text)
        errors = check(root)
        expected = [
            "store/case.rs: 1 `unsafe`",
            "pg/glue.rs: pg imports api",
            "pg/glue.rs: pg imports store",
            "store/case.rs and store/other.rs import each other",
            "lists `gone` in store/",
            "src/pg/extra.rs: not in ARCHITECTURE.md",
        ]
        missed = [e for e in expected if not any(e in line for line in errors)]
        wrong = [line for line in errors if not any(e in line for e in expected)]
        if missed or wrong:
            for m in missed:
                print(f"check_architecture self-test: did not report: {m}", file=sys.stderr)
            for w in wrong:
                print(f"check_architecture self-test: reported wrongly: {w}", file=sys.stderr)
            return 1
    print("check_architecture: self-test passed (each kind of breach is reported)")
    return 0


def main(argv):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    args = list(argv)
    if "--root" in args:
        i = args.index("--root")
        root = args[i + 1]
        del args[i:i + 2]
    if "--self-test" in args:
        return self_test()
    errors = check(root)
    for e in errors:
        print(f"architecture: {e}", file=sys.stderr)
    if errors:
        print(f"architecture: {len(errors)} breach(es) of ARCHITECTURE.md's rules", file=sys.stderr)
        return 1
    print("architecture: the layers, imports, unsafe and module table agree with ARCHITECTURE.md")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
