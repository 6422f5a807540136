#!/usr/bin/env bash
# Start a PostgreSQL server on 127.0.0.1 for the multi-worker sweep tests
# (installing it from Debian's packages when missing) and print its URL.
# Idempotent: a running server and an existing role and database are reused.
set -euo pipefail
log() { echo "postgres.sh: $*" >&2; }
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || ! command -v pg_ctlcluster >/dev/null; then
  log "installing postgresql"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 && apt-get install -y -qq postgresql >&2
fi
# The newest version with a server binary (not just a client).
ver=$(ls -d /usr/lib/postgresql/*/bin/postgres | awk -F/ '{print $5}' | sort -V | tail -1)
cluster() { pg_lsclusters -h | awk -v v="$ver" '$1 == v && $2 == "main"'; }
if [ -z "$(cluster)" ]; then
  pg_createcluster "$ver" main >&2
fi
if ! cluster | awk '$4 == "online"' | grep -q .; then
  pg_ctlcluster "$ver" main start >&2
fi
port=$(cluster | awk '{print $3}')
ready=""
for _ in $(seq 1 30); do
  if su postgres -c "psql -p $port -qtAc 'SELECT 1'" >/dev/null 2>&1; then ready=1; break; fi
  sleep 1
done
[ -n "$ready" ] || { log "server $ver/main on port $port did not come up"; exit 1; }
su postgres -c "psql -p $port -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='jaxdl'\"" | grep -q 1 \
  || su postgres -c "psql -p $port -qc \"CREATE ROLE jaxdl LOGIN PASSWORD 'jaxdl'\"" >&2
su postgres -c "psql -p $port -qtAc \"SELECT 1 FROM pg_database WHERE datname='jaxdl_test'\"" \
  | grep -q 1 || su postgres -c "createdb -p $port -O jaxdl jaxdl_test" >&2
log "PostgreSQL $ver on 127.0.0.1:$port"
echo "postgresql://jaxdl:jaxdl@127.0.0.1:$port/jaxdl_test"
