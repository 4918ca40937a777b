#!/usr/bin/env bash
# The native infrastructure: Postgres, Redis, NATS with JetStream and tansu (Kafka API).
#
#   scripts/infra.sh up     reuse what is running, start what is installed but stopped
#   scripts/infra.sh down   stop only what `up` started (recorded in .run/started)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ensure_postgres() {
  if port_open "$POSTGRES_PORT"; then return 0; fi
  command -v pg_ctlcluster >/dev/null 2>&1 || die "Postgres is not running on $POSTGRES_PORT and is not installed"
  say "starting Postgres"
  local version
  version=$(ls /etc/postgresql | sort -V | tail -1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
  mark_started postgres
  wait_for_port Postgres "$POSTGRES_PORT" 30
}

ensure_redis() {
  if port_open "$REDIS_PORT"; then return 0; fi
  command -v redis-server >/dev/null 2>&1 || die "Redis is not running on $REDIS_PORT and is not installed"
  say "starting Redis"
  mkdir -p "$RUN_DIR/redis"
  start_background redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no --dir "$RUN_DIR/redis"
  wait_for_port Redis "$REDIS_PORT" 15
}

ensure_nats() {
  if port_open "$NATS_PORT"; then return 0; fi
  command -v nats-server >/dev/null 2>&1 || die "NATS is not running on $NATS_PORT and nats-server is not installed"
  say "starting nats-server with JetStream"
  mkdir -p "$RUN_DIR/nats"
  start_background nats nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$RUN_DIR/nats"
  wait_for_port NATS "$NATS_PORT" 15
}

ensure_tansu() {
  if port_open "$KAFKA_PORT"; then return 0; fi
  command -v tansu >/dev/null 2>&1 || die "nothing speaks Kafka on $KAFKA_PORT and tansu is not installed (run scripts/install-tools.sh)"
  say "starting tansu (Kafka API) on 127.0.0.1:$KAFKA_PORT, sqlite storage under .run/tansu"
  mkdir -p "$RUN_DIR/tansu"
  # The sqlite engine is durable: topics and records survive `just down` / `just up`.
  # tansu resolves the sqlite path against its working directory (an absolute path gets
  # the directory prepended), so it runs from .run/tansu with a relative file name.
  cd "$RUN_DIR/tansu"
  start_background tansu tansu broker \
    --storage-engine "sqlite://tansu.db" \
    --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT"
  cd "$ROOT"
  wait_for_port tansu "$KAFKA_PORT" 30
}

infra_up() {
  ensure_postgres
  ensure_redis
  ensure_nats
  ensure_tansu
}

infra_down() {
  stop_pidfile tansu
  stop_pidfile nats
  stop_pidfile redis
  if we_started postgres; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main stop && echo "stopped postgres"
    forget_started postgres
  fi
}

case "${1:-}" in
  up) infra_up ;;
  down) infra_down ;;
  *) die "usage: $0 up|down" ;;
esac
