#!/usr/bin/env bash
#! The Debian packages of scripts/package.sh, installed, upgraded and removed with dpkg the way a
#! user would, into a PostgreSQL installation that never saw the source tree, for each supported
#! PostgreSQL version (scripts/pg_versions.sh).
#!
#! Why this way: a package is only right if everything the extension needs is in it (the library,
#! the control file, every install and upgrade script) and dpkg can take all of it away again. So
#! the test gives dpkg a root of its own: a private copy of the machine's installation made by
#! scripts/private_pg.sh (DIR + the absolute paths of the original, the lib and extension
#! directories real directories holding symbolic links to the machine's files, no event_store file)
#! with a private dpkg database under DIR/var/lib/dpkg (holding the package's dependencies as the
#! machine's dpkg knows them), and runs `dpkg --root=DIR`; no directory on the way to a file of the
#! package may be a symbolic link there. Nothing is ever written into the machine's installation
#! (checked: the listings of its library and extension directories before and after, a doc
#! directory of the package, and the machine's dpkg database) nor taken from the source tree but
#! the packages.
#!
#! For each version, with a fresh cluster started from DIR's binaries (the library preloaded):
#!   1. upgrade: PostgreSQL 15: the released 0.1.0 package (built from its commit, the parent of
#!      727b2bb, and cached under target/packages/0.1.0-COMMIT), CREATE EXTENSION, some events;
#!      then `dpkg -i` of the 0.2.0 package over it, a restart, ALTER EXTENSION event_store UPDATE:
#!      version 0.2.0, the events intact, appends working. PostgreSQL 18 never had a 0.1.0 package
#!      (0.1.0 does not build for 18): the 0.2.0 package, CREATE EXTENSION event_store VERSION
#!      '0.1.0' (the 0.1.0 script it ships), then the same UPDATE and checks. Without the 0.1.0
#!      commit (a shallow clone) the upgrade from the 0.1.0 package is SKIPPED (said so), and 15
#!      runs the upgrade the way 18 does. The 0.1.0 tree is read with `git archive` into
#!      a fresh directory under $TMPDIR (default /tmp), built once, and removed; its package is
#!      kept in the cache.
#!   2. CREATE EXTENSION in a fresh database (the default version, 0.2.0) and the README's
#!      walkthrough, as the package ships it (/usr/share/doc/postgresql-MAJOR-event-store/
#!      examples/walkthrough.sql): every error it shows is one it expects, and its streams,
#!      projections and cart are there afterwards.
#!   3. `dpkg -r`, then `--purge`: no event_store file left in DIR, and CREATE EXTENSION fails
#!      (the extension is not available).
#! usage: tests/package/run.sh [MAJOR...]    (default: every supported version)
#! env:   ES_PORT (first port; version i uses ES_PORT+i; default 28960),
#!        ES_PACKAGE_RELEASED_COMMIT (the 0.1.0 commit; another value shows the SKIPPED path)
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
cd "$here"
# shellcheck source=../../scripts/pg_versions.sh
source "$here/scripts/pg_versions.sh"
unset RUST_BACKTRACE RUST_LIB_BACKTRACE
versions=("$@")
# (ES_PG_VERSIONS: a space-separated choice of the caller, as scripts/test.sh takes it)
[ ${#versions[@]} -gt 0 ] || read -r -a versions <<<"${ES_PG_VERSIONS:-${ES_PG_SUPPORTED[*]}}"
base_port=${ES_PORT:-28960}
# The released 0.1.0: the parent of 727b2bb (Cargo.toml there says 0.1.0).
released_commit=${ES_PACKAGE_RELEASED_COMMIT:-a6a8583b8cba0a9317cbeae6fbe2891dd0297b58}
released_version=0.1.0
current_version=$(grep -m1 '^version' Cargo.toml | cut -d'"' -f2)
arch=$(dpkg --print-architecture)
t_all=$(date +%s)
elapsed() { echo "$(($(date +%s) - $1))s"; }
# the cluster of the version under test, stopped however the test ends
cluster=()
stop_cluster() { if [ ${#cluster[@]} -gt 0 ]; then "${cluster[@]}" stop >/dev/null 2>&1 || true; fi; }
trap stop_cluster EXIT
fail() { echo "package test FAILED: $*" >&2; exit 1; }
trap 'echo "package test FAILED at line $LINENO: $BASH_COMMAND (exit $?)" >&2' ERR

# machine_state MAJOR: what the test must leave as it found it: the machine installation's
# directories a package of the extension writes into (the library directory, the extension
# directory; name, inode, size, mtime of each entry), a doc directory of the package, a package of
# the extension in the machine's dpkg database.
machine_state() {
  local cfg
  cfg=$(es_pg_config "$1")
  { find "$("$cfg" --pkglibdir)" "$("$cfg" --sharedir)/extension" -maxdepth 1 \
      -printf '%p %i %s %T@ %y %l\n' 2>&1 || true; } | sort
  ls -d /usr/share/doc/postgresql-*-event-store 2>/dev/null || true
  { dpkg-query -W -f '${Package}\n' 2>/dev/null || true; } | { grep event-store || true; }
}

# released_package: builds (once per commit) the 0.1.0 package for PostgreSQL 15; prints its path,
# or nothing when the commit is not in this clone.
released_package() {
  local cache=$here/target/packages/$released_version-$released_commit
  local deb=$cache/postgresql-15-event-store_${released_version}_$arch.deb src
  if [ -f "$deb" ]; then
    echo "package test: $released_version package cached: $deb" >&2
    echo "$deb"
    return 0
  fi
  if ! git -C "$here" cat-file -e "$released_commit^{commit}" 2>/dev/null; then
    return 0
  fi
  # The released tree, read out of git with `git archive` (unlike `git worktree add`, nothing is
  # registered in the repository, so an interrupted run leaves nothing to prune), outside this
  # tree: under target/, cargo would take it for a member of this workspace (0.1.0's Cargo.toml
  # has no [workspace] of its own).
  # (a directory of its own per run: two runs at once on one machine must not share it)
  src=$(mktemp -d "${TMPDIR:-/tmp}/event_store-src-$released_commit.XXXXXX")
  rm -rf "$cache.tmp"
  mkdir -p "$cache"
  git -C "$here" archive "$released_commit" | tar -x -C "$src"
  # built aside and moved into the cache whole: an interrupted build leaves no cached package
  bash scripts/package.sh --pg 15 --source "$src" --out "$cache.tmp" >&2
  mv "$cache.tmp/$(basename "$deb")" "$deb"
  rm -rf "$cache.tmp" "$src"
  echo "$deb"
}

run_version() {
  local major=$1 port=$2 machine_cfg dir bindir libdir extdir deb old_deb state_before t
  machine_cfg=$(es_pg_config "$major")
  dir=$here/target/package-test/pg$major
  echo "== package test: PostgreSQL $major ($machine_cfg), port $port"
  state_before=$(machine_state "$major")

  t=$(date +%s)
  # (its output reaches the log through stderr; its last line is the package's path. Not
  # `tee /dev/stderr`: that opens the log file again, truncating it, when stderr is a file.)
  out=$(bash scripts/package.sh --pg "$major" --out "$here/target/packages")
  echo "$out" >&2
  deb=$(tail -1 <<<"$out")
  echo "package test: $major: $current_version package in $(elapsed "$t")"
  old_deb=''
  if [ "$major" = 15 ]; then
    t=$(date +%s)
    old_deb=$(released_package)
    if [ -n "$old_deb" ]; then
      echo "package test: 15: $released_version package ready in $(elapsed "$t")"
    else
      echo "package test: SKIPPED the upgrade from the released $released_version package: commit" \
        "$released_commit is not in this clone (shallow?); 0.2.0 is installed alone"
    fi
  fi

  # The package holds the library, the control file, this version's install script, every script
  # of sql/ and the docs.
  local contents f
  contents=$(dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|')
  for f in "$("$machine_cfg" --pkglibdir)/event_store.so" \
    "$("$machine_cfg" --sharedir)/extension/event_store.control" \
    "$("$machine_cfg" --sharedir)/extension/event_store--$current_version.sql" \
    $(for s in sql/event_store--*.sql; do echo "$("$machine_cfg" --sharedir)/extension/$(basename "$s")"; done) \
    "/usr/share/doc/postgresql-$major-event-store/README.md" \
    "/usr/share/doc/postgresql-$major-event-store/docs/reference.md" \
    "/usr/share/doc/postgresql-$major-event-store/docs/diagrams/dataflow.svg" \
    "/usr/share/doc/postgresql-$major-event-store/examples/walkthrough.sql"; do
    grep -qxF "$f" <<<"$contents" || fail "the package has no $f"
  done

  # The private installation and its dpkg database.
  bindir=$dir$("$machine_cfg" --bindir)
  libdir=$("$machine_cfg" --pkglibdir)
  extdir=$("$machine_cfg" --sharedir)/extension
  cluster=(env PG_BIN="$bindir" ES_CLUSTER_DIR="$dir/cluster" ES_PORT="$port" bash scripts/cluster.sh)
  # a server of an earlier, interrupted run
  if [ -x "$bindir/pg_ctl" ]; then "${cluster[@]}" stop >/dev/null 2>&1 || true; fi
  rm -rf "$dir"
  PG_CONFIG=$machine_cfg bash scripts/private_pg.sh "$dir" >/dev/null
  psql=("$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres)
  # dpkg must write into the copy only: no directory on the way to a file of the package may be
  # a symbolic link (it could lead into the machine's installation).
  for p in $(dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|'); do
    local at=$dir
    for part in $(tr '/' ' ' <<<"$p"); do
      at=$at/$part
      [ -L "$at" ] && fail "$at is a symbolic link: dpkg --root=$dir would write through it"
      [ -e "$at" ] || break
    done
  done
  local admin=$dir/var/lib/dpkg
  mkdir -p "$admin"/{info,updates,triggers} "$dir/var/log"
  : >"$admin/status"
  : >"$admin/available"
  # The package's dependencies as the machine has them (so dpkg checks them for real), with no
  # files of their own in the copy.
  local dep
  for dep in $(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed -E 's/\(.*\)//; s/ //g'); do
    dpkg-query -s "$dep" >>"$admin/status" 2>/dev/null ||
      fail "the package depends on $dep, which the machine does not have"
    echo >>"$admin/status"
    : >"$admin/info/$(dpkg-query -W -f '${binary:Package}' "$dep").list"
  done
  local dpkg=(dpkg --root="$dir" --log="$dir/var/log/dpkg.log")

  local db=es_pkg_upgrade stream=7f3c2a10-0000-4000-8000-00000000a001 v
  if [ -n "$old_deb" ]; then
    echo "package test: 15: dpkg -i $(basename "$old_deb")"
    "${dpkg[@]}" -i "$old_deb" >"$dir/dpkg.log" 2>&1 || { cat "$dir/dpkg.log"; fail "dpkg -i $old_deb"; }
    [ -f "$dir$extdir/event_store--$released_version.sql" ] || fail "no $released_version script installed"
    "${cluster[@]}" start >/dev/null
    "${psql[@]}" -d postgres -c "CREATE DATABASE $db"
    "${psql[@]}" -d "$db" -c "CREATE EXTENSION event_store"
  else
    "${dpkg[@]}" -i "$deb" >"$dir/dpkg.log" 2>&1 || { cat "$dir/dpkg.log"; fail "dpkg -i $deb"; }
    "${cluster[@]}" start >/dev/null
    "${psql[@]}" -d postgres -c "CREATE DATABASE $db"
    if [ "$major" = 15 ]; then
      echo "package test: 15: without the $released_version package the upgrade runs from CREATE" \
        "EXTENSION event_store VERSION '$released_version' of the $current_version package"
    else
      echo "package test: $major: no $released_version package for PostgreSQL $major ($released_version" \
        "never built for it): the upgrade runs from CREATE EXTENSION event_store VERSION" \
        "'$released_version' of the $current_version package"
    fi
    "${psql[@]}" -d "$db" -c "CREATE EXTENSION event_store VERSION '$released_version'"
  fi
  v=$("${psql[@]}" -At -d "$db" -c "SELECT extversion FROM pg_extension WHERE extname = 'event_store'")
  [ "$v" = "$released_version" ] || fail "extension version $v, expected $released_version"
  "${psql[@]}" -At -d "$db" -c "SELECT es.append_events('$stream', 0, ARRAY['{\"type\":\"Registered\"}', '{\"type\":\"Noted\",\"n\":1}', '{\"type\":\"Noted\",\"n\":2}']::jsonb[])" >/dev/null
  local digest_before
  digest_before=$("${psql[@]}" -At -d "$db" -c "SELECT md5(string_agg(concat_ws('|', global_position, stream_id, version, event_id, event_type, data::text, metadata::text, recorded_at), ',' ORDER BY global_position)) FROM es.events")

  if [ -n "$old_deb" ]; then
    echo "package test: 15: dpkg -i $(basename "$deb") over $released_version (upgrade, the server running)"
    "${dpkg[@]}" -i "$deb" >"$dir/dpkg.log" 2>&1 || { cat "$dir/dpkg.log"; fail "dpkg -i $deb (upgrade)"; }
    grep -qF "Unpacking postgresql-$major-event-store ($current_version) over ($released_version)" "$dir/dpkg.log" ||
      { cat "$dir/dpkg.log"; fail "dpkg did not upgrade from $released_version"; }
  fi
  [ "$(dpkg-query --admindir="$admin" -W -f '${Version} ${Status}' "postgresql-$major-event-store")" = "$current_version install ok installed" ] ||
    fail "dpkg does not have $current_version installed"
  # exactly the package's files in the extension and lib directories: nothing left of 0.1.0
  diff <(cd "$dir" && find ".$libdir" ".$extdir" -maxdepth 1 -name 'event_store*' -type f | sed 's|^\.||' | sort) \
    <(dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|' | grep -E '/event_store[^/]*$' | sort) ||
    fail "the installed files are not the package's"
  "${cluster[@]}" restart >/dev/null
  "${psql[@]}" -d "$db" -c "ALTER EXTENSION event_store UPDATE"
  v=$("${psql[@]}" -At -d "$db" -c "SELECT extversion FROM pg_extension WHERE extname = 'event_store'")
  [ "$v" = "$current_version" ] || fail "after UPDATE the extension is at $v, expected $current_version"
  [ "$("${psql[@]}" -At -d "$db" -c "SELECT md5(string_agg(concat_ws('|', global_position, stream_id, version, event_id, event_type, data::text, metadata::text, recorded_at), ',' ORDER BY global_position)) FROM es.events")" = "$digest_before" ] ||
    fail "the events changed in the upgrade"
  v=$("${psql[@]}" -At -d "$db" -c "SELECT es.append_events('$stream', 3, ARRAY['{\"type\":\"Noted\",\"n\":3}']::jsonb[])")
  [ "$v" = 4 ] || fail "append after the upgrade returned $v, expected 4"
  "${psql[@]}" -At -d "$db" -c "SELECT es.append_events('$stream', 3, ARRAY['{\"type\":\"Late\"}']::jsonb[])" >/dev/null 2>&1 &&
    fail "a stale expected version was accepted after the upgrade"
  echo "package test: $major: upgraded $released_version -> $current_version: events intact, appends work"

  # A fresh database, and the walkthrough as the package ships it.
  "${psql[@]}" -d postgres -c "CREATE DATABASE es_pkg_fresh"
  "${psql[@]}" -d es_pkg_fresh -c "CREATE EXTENSION event_store"
  v=$("${psql[@]}" -At -d es_pkg_fresh -c "SELECT extversion FROM pg_extension WHERE extname = 'event_store'")
  [ "$v" = "$current_version" ] || fail "CREATE EXTENSION made version $v"
  local walk=$dir/usr/share/doc/postgresql-$major-event-store/examples/walkthrough.sql out=$dir/walkthrough.out
  [ -f "$walk" ] || fail "the package has no $walk"
  "$bindir/psql" -X -h 127.0.0.1 -p "$port" -U postgres -d postgres -f "$walk" >"$out" 2>&1 ||
    { cat "$out"; fail "the walkthrough failed (psql exit code)"; }
  local errors expected
  errors=$(grep -c 'ERROR:' "$out" || true)
  expected=$(grep -c -- '-> SQLSTATE' "$out" || true)
  { [ "$errors" = "$expected" ] && [ "$expected" -gt 0 ] && ! grep -q -- '-> SQLSTATE 00000' "$out"; } ||
    { cat "$out"; fail "the walkthrough shows $errors errors where it expects $expected"; }
  v=$("${psql[@]}" -At -d es_walkthrough_scratch -c "SELECT es.stream_version('7f3c2a10-0000-4000-8000-000000000001'),
      (SELECT count(*) FROM es.account_balances), es.stream_version('7f3c2a10-0000-4000-8000-0000000000c1'),
      (SELECT count(*) FROM es.projections WHERE last_error IS NOT NULL)")
  [ "$v" = "4|2|3|0" ] || { cat "$out"; fail "after the walkthrough: $v (stream, balances, cart, projection errors), expected 4|2|3|0"; }
  echo "package test: $major: CREATE EXTENSION and the walkthrough ($expected expected errors, no other) pass"

  # Removal: the server stops using the library first (as a user would: no preload).
  "${cluster[@]}" stop
  "${dpkg[@]}" -r "postgresql-$major-event-store" >"$dir/dpkg.log" 2>&1 || { cat "$dir/dpkg.log"; fail "dpkg -r"; }
  "${dpkg[@]}" --purge "postgresql-$major-event-store" >"$dir/dpkg.log" 2>&1 || { cat "$dir/dpkg.log"; fail "dpkg --purge"; }
  local left
  # (the 18 wheel's own prefix is /opt/event_store: a directory of the installation, not ours)
  left=$(find "$dir" -path "$dir/cluster" -prune -o \( -name 'event_store.*' -o -name 'event_store--*' \
    -o -name '*event-store*' \) -print)
  [ -z "$left" ] || fail "left after dpkg --purge: $left"
  [ -z "$(dpkg-query --admindir="$admin" -W 2>/dev/null | grep event-store)" ] ||
    fail "the dpkg database still knows the package after --purge"
  ES_PRELOAD=0 "${cluster[@]}" start >/dev/null
  "${psql[@]}" -d postgres -c "CREATE DATABASE es_pkg_removed"
  if out=$("${psql[@]}" -d es_pkg_removed -c "CREATE EXTENSION event_store" 2>&1); then
    fail "CREATE EXTENSION succeeded after the package was removed"
  fi
  grep -qE 'is not available|could not open extension control file' <<<"$out" ||
    fail "CREATE EXTENSION after removal: unexpected error: $out"
  [ "$("${psql[@]}" -At -d postgres -c "SELECT count(*) FROM pg_available_extensions WHERE name = 'event_store'")" = 0 ] ||
    fail "pg_available_extensions still lists event_store"
  echo "package test: $major: removed and purged: no file left; CREATE EXTENSION: $(grep -m1 ERROR <<<"$out")"
  "${cluster[@]}" stop

  [ "$(machine_state "$major")" = "$state_before" ] ||
    { diff <(echo "$state_before") <(machine_state "$major") || true; fail "the machine's installation of $major changed"; }
  rm -rf "$dir"
  echo "package test: PostgreSQL $major passed (the machine's installation untouched)"
}

i=0
for major in "${versions[@]}"; do
  t=$(date +%s)
  run_version "$major" $((base_port + i))
  echo "package test: PostgreSQL $major took $(elapsed "$t")"
  i=$((i + 1))
done
echo "package test: passed for PostgreSQL ${versions[*]} in $(elapsed "$t_all")"
