#!/usr/bin/env bash
# Make sure the PostgreSQL and Redis that the tests use are running; start them when they are installed but down.
# Prints one clear line for anything missing and exits non-zero, so `make test` never silently skips.
set -u
PGHOST=${TWOFA_TEST_PGHOST:-127.0.0.1}
PGPORT=${TWOFA_TEST_PGPORT:-5432}
REDIS_PORT=${TWOFA_TEST_REDIS_PORT:-6379}

pg_up() { pg_isready -q -h "$PGHOST" -p "$PGPORT" 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

if ! pg_up; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    for version in $(ls /etc/postgresql); do
      pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
    done
    for _ in $(seq 1 30); do pg_up && break; sleep 1; done
  fi
  pg_up || { echo "services: PostgreSQL is not running on $PGHOST:$PGPORT and could not be started (install postgresql, or set TWOFA_TEST_PGHOST/TWOFA_TEST_PGPORT and TWOFA_TEST_PG_ADMIN_URL)"; exit 1; }
  echo "services: started PostgreSQL"
fi

if ! redis_up; then
  if command -v redis-server >/dev/null 2>&1; then
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log >/dev/null 2>&1 || true
    for _ in $(seq 1 30); do redis_up && break; sleep 1; done
  fi
  redis_up || { echo "services: Redis is not running on 127.0.0.1:$REDIS_PORT and could not be started (install redis-server)"; exit 1; }
  echo "services: started Redis"
fi
# The browser tests drive Debian's Chromium through its chromedriver (Selenium).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } >/dev/null 2>&1 || true
  fi
  command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 \
    || { echo "services: Chromium for the browser tests is missing (apt-get install chromium chromium-driver)"; exit 1; }
  echo "services: installed Chromium and chromedriver"
fi
echo "services: PostgreSQL and Redis are up, Chromium is installed"
