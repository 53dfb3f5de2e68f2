#!/usr/bin/env bash
#! Builds the extension and installs it into the machine's PostgreSQL 15 (as root, no sudo needed).
#! usage: scripts/install.sh [--release]     (debug by default: fast to build, what the tests use)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
bash scripts/setup.sh
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
mkdir -p "$here/target"
profile=()
[ "${1:-}" = "--release" ] && profile=(--release)
# Servers that have the library loaded map the file: overwriting it in place would crash them
# (SIGBUS). Moving it aside keeps their copy alive; the new file gets a new inode.
so=$("$PG_CONFIG" --pkglibdir)/event_store.so
[ -f "$so" ] && mv -f "$so" "$so.replaced"
cargo pgrx install --pg-config "$PG_CONFIG" "${profile[@]}" >"$here/target/install.log" 2>&1 ||
  { tail -40 "$here/target/install.log"; exit 1; }
echo "install: event_store $(grep -m1 '^version' Cargo.toml | cut -d'"' -f2) installed (${1:-debug})"
