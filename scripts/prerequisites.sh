#!/usr/bin/env bash
#! Installs what building event_store needs on a Debian 12 machine, as root, and nothing more:
#! Debian's PostgreSQL 15 with its server headers, clang and libclang (pgrx's bindgen reads the
#! headers with them), pkg-config, and cargo-pgrx 0.18.1 (the version the crate pins).
#! Rust itself (1.85 or newer for edition 2024; tested with 1.95) must already be there.
#! Idempotent: each step is skipped when what it installs is already there.
#! The tools the tests need besides (PostgreSQL 18, PL/Proxy, wal2json, pgbouncer, the drivers)
#! are installed by scripts/setup.sh, which runs this first.
set -euo pipefail

PGRX_VERSION=0.18.1

need_pkgs=()
for p in postgresql-15 postgresql-server-dev-15 postgresql-contrib libclang-dev clang pkg-config; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "prerequisites: installing Debian packages: ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

if ! cargo pgrx --version 2>/dev/null | grep -q " ${PGRX_VERSION}\$"; then
  echo "prerequisites: installing cargo-pgrx ${PGRX_VERSION} with cargo install (takes about 4 minutes)"
  cargo install cargo-pgrx --version "${PGRX_VERSION}" --locked --quiet
fi
