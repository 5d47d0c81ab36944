#!/usr/bin/env bash
# Installs (Debian packages) and starts a local PostgreSQL + PostGIS for the database tests,
# creates role `sladd` / database `sladd_test`, and prints the variables the tests read:
#   eval "$(bash scripts/postgis.sh)"
# Needs root or sudo. Listens on localhost only.
set -euo pipefail
SUDO=""; AS_PG="runuser -u postgres --"
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; AS_PG="sudo -u postgres"; fi
if ! ls /usr/share/postgresql/*/extension/postgis.control >/dev/null 2>&1; then
  echo "[postgis] apt-get install postgresql postgis" >&2
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql postgresql-postgis >/dev/null 2>&1 \
    || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql postgresql-15-postgis-3 >/dev/null
fi
ver=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! $SUDO pg_lsclusters -h | awk '{print $1" "$2}' | grep -q "^$ver main$"; then
  $SUDO pg_createcluster "$ver" main >/dev/null
fi
$SUDO pg_ctlcluster "$ver" main start >/dev/null 2>&1 || true
port=$($SUDO pg_lsclusters -h | awk -v v="$ver" '$1==v && $2=="main" {print $3}')
for i in $(seq 1 30); do
  $AS_PG psql -p "$port" -qtAc "select 1" >/dev/null 2>&1 && break
  sleep 1
done
$AS_PG psql -p "$port" -qtAc "SELECT 1 FROM pg_roles WHERE rolname='sladd'" | grep -q 1 \
  || $AS_PG psql -p "$port" -qc "CREATE ROLE sladd LOGIN PASSWORD 'sladd'" >&2
$AS_PG psql -p "$port" -qtAc "SELECT 1 FROM pg_database WHERE datname='sladd_test'" | grep -q 1 \
  || $AS_PG psql -p "$port" -qc "CREATE DATABASE sladd_test OWNER sladd" >&2
$AS_PG psql -p "$port" -d sladd_test -qc "CREATE EXTENSION IF NOT EXISTS postgis" >&2
echo "export SLADD_PG_DSN=postgresql://sladd:sladd@127.0.0.1:$port/sladd_test"
echo "export SLADD_PG_CLUSTER='$ver main'"
