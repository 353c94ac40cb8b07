#!/usr/bin/env bash
# Start a throwaway local PostgreSQL for the serving tests (installs it from Debian packages when
# absent) and print the line to export, e.g.:
#   eval "$(.ci/postgres.sh)"   # sets TORCHSHIELD_TEST_PG_URL
# Trust authentication on 127.0.0.1 only, data under /tmp: for tests, never for production.
set -euo pipefail
DATA=${TORCHSHIELD_PG_DATA:-/tmp/torchshield-pg}
PORT=${TORCHSHIELD_PG_PORT:-55432}
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then echo "postgres.sh: PostgreSQL is not installed and this is not root" >&2; exit 1; fi
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/bash -c "$*"; else bash -c "$*"; fi; }
SUPER=$( [ "$(id -u)" = 0 ] && echo postgres || id -un )
mkdir -p "$DATA"
[ "$(id -u)" = 0 ] && chown postgres "$DATA"
if [ ! -f "$DATA/PG_VERSION" ]; then
  as_pg "$BIN/initdb -D '$DATA' -A trust -U '$SUPER' >/dev/null"
fi
if ! as_pg "$BIN/pg_ctl -D '$DATA' status >/dev/null 2>&1"; then
  as_pg "$BIN/pg_ctl -D '$DATA' -w -l '$DATA/server.log' \
    -o \"-p $PORT -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off\" start >/dev/null"
fi
as_pg "$BIN/psql -h 127.0.0.1 -p $PORT -U '$SUPER' -d postgres -tAc \"SELECT 1 FROM pg_database WHERE datname='torchshield_test'\"" \
  | grep -q 1 || as_pg "$BIN/createdb -h 127.0.0.1 -p $PORT -U '$SUPER' torchshield_test"
echo "export TORCHSHIELD_TEST_PG_URL=postgresql+psycopg://$SUPER@127.0.0.1:$PORT/torchshield_test"
