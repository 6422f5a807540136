#!/usr/bin/env bash
# Start a PostgreSQL server on 127.0.0.1:5432 for the multi-worker sweep tests
# (installing it from Debian's packages when missing) and print its URL.
# Idempotent: an already running server and existing role/database are reused.
set -euo pipefail
log() { echo "postgres.sh: $*" >&2; }
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  log "installing postgresql"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 && apt-get install -y -qq postgresql >&2
fi
ver=$(ls /usr/lib/postgresql | sort -V | tail -1)
if ! pg_lsclusters -h | awk -v v="$ver" '$1 == v && $2 == "main"' | grep -q .; then
  pg_createcluster "$ver" main >&2
fi
if ! pg_lsclusters -h | awk -v v="$ver" '$1 == v && $2 == "main" && $4 == "online"' | grep -q .; then
  pg_ctlcluster "$ver" main start >&2
fi
for _ in $(seq 1 30); do
  su postgres -c "psql -qtAc 'SELECT 1'" >/dev/null 2>&1 && break
  sleep 1
done
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='jaxdl'\"" | grep -q 1 \
  || su postgres -c "psql -qc \"CREATE ROLE jaxdl LOGIN PASSWORD 'jaxdl'\"" >&2
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='jaxdl_test'\"" | grep -q 1 \
  || su postgres -c "createdb -O jaxdl jaxdl_test" >&2
echo "postgresql://jaxdl:jaxdl@127.0.0.1:5432/jaxdl_test"
