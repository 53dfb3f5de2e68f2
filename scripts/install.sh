#!/usr/bin/env bash
#! Builds event_store from this source tree and installs it into a PostgreSQL installation: the
#! one `pg_config` on the PATH names, or $PG_CONFIG (Debian: /usr/lib/postgresql/NN/bin/pg_config).
#! PostgreSQL 15 and 18 are supported; the build takes the features of the installation's version.
#!
#! Installs nothing but the extension's files (the library, the control file, the current
#! version's install script, and from sql/ every released version's install script and every
#! upgrade script, so `CREATE EXTENSION event_store VERSION '0.1.0'` and every
#! `ALTER EXTENSION event_store UPDATE` path work). It checks the prerequisites first and says how
#! to get what is missing; the one tool it installs itself is cargo-pgrx 0.18.1 (with `cargo
#! install`, into ~/.cargo/bin), which the build cannot do without. `cargo pgrx init` is kept in a
#! PGRX_HOME under target/ (never ~/.pgrx) unless PGRX_HOME is set.
#!
#! Every install starts from a clean slate: the extension's files of an earlier install are
#! removed from the share and lib directories first, so nothing stale (a script of a version
#! this tree no longer ships, an old library) is left behind. The library is moved aside, never
#! overwritten: a running server maps it, and writing over a mapped file crashes that server;
#! the moved file (event_store.so.replaced) keeps its inode until the last server that maps it
#! stops. Restart the server to load the new library.
#!
#! usage: scripts/install.sh [--debug] [--release]   (release by default; the tests use --debug)
#! env:   PG_CONFIG, PGRX_HOME, CARGO_TARGET_DIR (default: target/, or target/build-pgNN for a
#!        version other than 15, so builds for two versions do not rebuild each other)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
# shellcheck source=pg_versions.sh
source "$here/scripts/pg_versions.sh"

profile=release
for arg in "$@"; do
  case "$arg" in
    --release) profile=release ;;
    --debug) profile=debug ;;
    *) echo "usage: scripts/install.sh [--debug] [--release]" >&2; exit 2 ;;
  esac
done
started=$SECONDS
say() { echo "install: $*"; }
elapsed() { local s=$((SECONDS - $1)); if [ $s -ge 60 ]; then echo "$((s / 60)) min $((s % 60)) s"; else echo "$s s"; fi; }
missing() { echo "install: $1" >&2; exit 1; }

# --- prerequisites -------------------------------------------------------------------------
if [ -z "${PG_CONFIG:-}" ]; then
  PG_CONFIG=$(command -v pg_config || true)
  [ -n "$PG_CONFIG" ] || PG_CONFIG=$(es_pg_config 15)
fi
[ -x "$PG_CONFIG" ] || missing "no pg_config at '$PG_CONFIG': set PG_CONFIG to your installation's (Debian: /usr/lib/postgresql/NN/bin/pg_config)"
major=$(es_pg_major "$PG_CONFIG")
case " ${ES_PG_SUPPORTED[*]} " in
  *" $major "*) ;;
  *) missing "PostgreSQL $major is not supported (supported: ${ES_PG_SUPPORTED[*]})" ;;
esac
[ -f "$("$PG_CONFIG" --includedir-server)/postgres.h" ] ||
  missing "the server headers of PostgreSQL $major are missing (Debian: apt-get install postgresql-server-dev-$major)"
command -v cargo >/dev/null || missing "Rust is missing: install it with rustup (1.85 or newer; tested with 1.95)"
rust=$(rustc --version | cut -d' ' -f2)
[ "$(printf '%s\n' 1.85.0 "$rust" | sort -V | head -1)" = 1.85.0 ] ||
  missing "Rust $rust is too old: 1.85 or newer is needed (rustup update)"
command -v clang >/dev/null && compgen -G '/usr/lib/llvm-*/lib/libclang*.so*' >/dev/null ||
  ldconfig -p 2>/dev/null | grep -q 'libclang' ||
  missing "clang and libclang are missing (pgrx reads the server headers with them; Debian: apt-get install clang libclang-dev)"
libdir=$("$PG_CONFIG" --pkglibdir)
extdir=$("$PG_CONFIG" --sharedir)/extension
[ -w "$libdir" ] && [ -w "$extdir" ] ||
  missing "$libdir and $extdir are not writable by $(id -un): run as root (or with sudo)"
if ! cargo pgrx --version 2>/dev/null | grep -q ' 0\.18\.1$'; then
  say "cargo-pgrx 0.18.1 is missing: cargo install cargo-pgrx --version 0.18.1 --locked (about 4 minutes)"
  t=$SECONDS
  cargo install cargo-pgrx --version 0.18.1 --locked --quiet
  say "cargo-pgrx installed ($(elapsed $t))"
fi
if [ -z "${PGRX_HOME:-}" ]; then
  PGRX_HOME=$here/target/pgrx-home/$(printf '%s' "$PG_CONFIG" | md5sum | cut -c1-12)
fi
export PGRX_HOME
if ! grep -qs "pg$major = \"$PG_CONFIG\"" "$PGRX_HOME/config.toml"; then
  mkdir -p "$PGRX_HOME"
  # with an explicit pg_config, `cargo pgrx init` only records it (it downloads nothing)
  cargo pgrx init "--pg$major" "$PG_CONFIG" >"$PGRX_HOME/init.log" 2>&1 ||
    { cat "$PGRX_HOME/init.log" >&2; exit 1; }
fi
if [ -z "${CARGO_TARGET_DIR:-}" ] && [ "$major" != 15 ]; then
  export CARGO_TARGET_DIR=$here/target/build-pg$major
fi

# --- build and install ---------------------------------------------------------------------
version=$(grep -m1 '^version' Cargo.toml | cut -d'"' -f2)
say "building event_store $version ($profile) for PostgreSQL $("$PG_CONFIG" --version | cut -d' ' -f2) at $(dirname "$("$PG_CONFIG" --bindir)")"
mkdir -p "$here/target"
log=$here/target/install-pg$major.log
so=$libdir/event_store.so
[ -f "$so" ] && mv -f "$so" "$so.replaced"
rm -f "$extdir"/event_store.control "$extdir"/event_store--*.sql
t=$SECONDS
flags=()
[ "$profile" = release ] && flags=(--release)
# shellcheck disable=SC2046
cargo pgrx install --pg-config "$PG_CONFIG" $(es_pg_features "$major") "${flags[@]}" >"$log" 2>&1 ||
  { tail -40 "$log"; echo "install: the build failed (the whole log: $log)" >&2; exit 1; }
say "built and installed the library and control file ($(elapsed $t); log: $log)"
for f in sql/event_store--*.sql; do
  install -m 644 "$f" "$extdir/"
done
[ -f "$extdir/event_store--$version.sql" ] || missing "event_store--$version.sql is missing in $extdir"
say "event_store $version installed into $(dirname "$libdir") in $(elapsed $started):" \
  "$libdir/event_store.so, $extdir/event_store.control," \
  "$(cd "$extdir" && ls event_store--*.sql | tr '\n' ' ')"
if [ "${ES_INSTALL_QUIET:-0}" != 1 ]; then
  cat <<NEXT
install: next steps (docs/installation.md):
  1. in postgresql.conf: shared_preload_libraries = 'event_store'   (for read_all, subscriptions,
     projections and tracing; the rest works without it)
  2. restart PostgreSQL (a server that had the old library loaded needs the restart too)
  3. in each database: CREATE EXTENSION event_store;   (or ALTER EXTENSION event_store UPDATE;)
NEXT
fi
