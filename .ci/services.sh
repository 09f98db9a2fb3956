#!/usr/bin/env bash
# Start the PostgreSQL and Redis the tests use, when they are installed here but not running.
# Idempotent: does nothing when both answer already.
set -euo pipefail

PGHOST=${PGHOST:-127.0.0.1}
PGPORT=${PGPORT:-5432}

pg_up() { pg_isready -h "$PGHOST" -p "$PGPORT" -q 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; }

wait_for() {
  local what=$1 check=$2
  for _ in $(seq 1 30); do
    if $check; then return 0; fi
    sleep 1
  done
  echo "services: $what did not come up" >&2
  return 1
}

if ! pg_up; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "services: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start || true
    wait_for PostgreSQL pg_up
  else
    echo "services: PostgreSQL is not answering on $PGHOST:$PGPORT and no local cluster was found." >&2
    echo "          Start one, or point QUARRY_TEST_DATABASE_URL at a server you can create databases on." >&2
    exit 1
  fi
fi

if ! redis_up; then
  if command -v redis-server >/dev/null 2>&1; then
    echo "services: starting Redis"
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log
    wait_for Redis redis_up
  else
    echo "services: Redis is not answering on 127.0.0.1:6379 and redis-server is not installed." >&2
    echo "          Start one, or point QUARRY_TEST_REDIS_URL at a server." >&2
    exit 1
  fi
fi
echo "services: PostgreSQL and Redis are up"
