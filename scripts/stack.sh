#!/usr/bin/env bash
# The whole stack.
#
#   scripts/stack.sh up       Docker engine present: infra/compose.yaml. Otherwise natively:
#                             infrastructure (scripts/infra.sh), saga topics, then
#                             every service binary that exists, logs and pids under .run/.
#   scripts/stack.sh down     stop what `up` started, and only that.
#   scripts/stack.sh status   what is running where.
# SHOPMESH_NATIVE=1 forces the native path even when Docker is available.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

# Wherever cargo puts binaries (CARGO_TARGET_DIR, a config's target-dir, or ./target).
target_dir() {
  cargo metadata --format-version 1 --no-deps 2>/dev/null |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
}
TARGET_DIR="${CARGO_TARGET_DIR:-$(target_dir)}"
PROFILE="${PROFILE:-debug}"

compose() { docker compose -f "$ROOT/infra/compose.yaml" "$@"; }

use_compose() { [[ ${SHOPMESH_NATIVE:-0} != 1 ]] && docker_engine; }

jwt_secret() {
  # One development secret per checkout, shared by every service that verifies tokens.
  local file="$RUN_DIR/jwt_secret"
  mkdir -p "$RUN_DIR"
  [[ -s $file ]] || head -c 32 /dev/urandom | base64 | tr -d '\n=' >"$file"
  cat "$file"
}

start_service() {
  local name=$1 port=${SERVICE_PORT[$1]} bin="$TARGET_DIR/$PROFILE/$1"
  [[ -x $bin ]] || return 1
  if [[ -f $PID_DIR/$name.pid ]] && kill -0 "$(cat "$PID_DIR/$name.pid")" 2>/dev/null; then
    echo "$name already running"
    return 0
  fi
  port_open "$port" && die "port $port (for $name) is taken by another process"
  local env=(
    "HTTP_ADDR=0.0.0.0:$port"
    "NATS_URL=nats://127.0.0.1:$NATS_PORT"
    "KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT"
    "REDIS_URL=redis://127.0.0.1:$REDIS_PORT"
    "JWT_SECRET=${JWT_SECRET:-$(jwt_secret)}"
    "RUST_LOG=${RUST_LOG:-info}"
  )
  [[ -n ${SERVICE_DB[$name]:-} ]] && env+=("DATABASE_URL=postgres://postgres@127.0.0.1:$POSTGRES_PORT/${SERVICE_DB[$name]}")
  start_background "$name" env "${env[@]}" "$bin"
  if ! wait_for_http "$name" "http://127.0.0.1:$port/health" 60; then
    tail -20 "$LOG_DIR/$name.log" >&2
    die "$name did not become healthy (log: $LOG_DIR/$name.log)"
  fi
}

print_endpoints() {
  echo
  echo "Shopmesh is up:"
  printf '  %-22s %s\n' "Postgres" "127.0.0.1:$POSTGRES_PORT (databases: ${DATABASES[*]})"
  printf '  %-22s %s\n' "Redis" "127.0.0.1:$REDIS_PORT"
  printf '  %-22s %s\n' "NATS + JetStream" "nats://127.0.0.1:$NATS_PORT   (watch: nats sub 'events.>')"
  printf '  %-22s %s\n' "Kafka API (tansu)" "127.0.0.1:$KAFKA_PORT   (topics: order_created payment_success payment_failed order_confirmed order_cancelled notification_failed)"
  local name started=0
  for name in "${SERVICES[@]}"; do
    if [[ -f $PID_DIR/$name.pid ]]; then
      printf '  %-22s %s\n' "$name" "http://127.0.0.1:${SERVICE_PORT[$name]}  (log: .run/logs/$name.log)"
      started=1
    fi
  done
  ((started)) || echo "  (no service binaries are built yet; the infrastructure above is ready)"
  echo "Stop with: just down"
}

stack_up() {
  if use_compose; then
    say "Docker engine found: starting infra/compose.yaml"
    compose up -d --build --wait
    mkdir -p "$RUN_DIR" && touch "$RUN_DIR/compose"
    compose ps
    return
  fi
  # No databases to create: each service creates its own (shop_*) when it starts.
  "$ROOT/scripts/infra.sh" up
  say "building the binaries ($PROFILE)"
  local release=()
  [[ $PROFILE == release ]] && release=(--release)
  cargo build "${release[@]}" --workspace --bins
  say "creating the saga topics"
  "$TARGET_DIR/$PROFILE/meshctl" topics ensure --brokers "127.0.0.1:$KAFKA_PORT"
  local name
  for name in "${SERVICES[@]}"; do
    start_service "$name" && say "$name listening on :${SERVICE_PORT[$name]}" || true
  done
  print_endpoints
}

stack_down() {
  if [[ -f $RUN_DIR/compose ]]; then
    compose down
    rm -f "$RUN_DIR/compose"
    return
  fi
  local i
  # Reverse start order: the gateway first, the infrastructure last.
  for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
    stop_pidfile "${SERVICES[$i]}"
  done
  "$ROOT/scripts/infra.sh" down
}

stack_status() {
  local name
  for name in postgres redis nats tansu "${SERVICES[@]}"; do
    local port
    case $name in
      postgres) port=$POSTGRES_PORT ;; redis) port=$REDIS_PORT ;; nats) port=$NATS_PORT ;;
      tansu) port=$KAFKA_PORT ;; *) port=${SERVICE_PORT[$name]} ;;
    esac
    if port_open "$port"; then state="up"; else state="down"; fi
    we_started "$name" && owner="started by just up" || owner=""
    printf '  %-22s :%-6s %-5s %s\n' "$name" "$port" "$state" "$owner"
  done
}

case "${1:-}" in
  up) stack_up ;;
  down) stack_down ;;
  status) stack_status ;;
  *) die "usage: $0 up|down|status" ;;
esac
