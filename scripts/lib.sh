# Shared by the scripts in this folder: where things live and small helpers.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Tools (tansu, just) and the cargo target dir live outside the clone so a fresh clone reuses
# them; everything still works when this cache is empty, only slower.
SHOPMESH_CACHE="${SHOPMESH_CACHE:-$HOME/.cache/shopmesh}"
TOOLS_BIN="$SHOPMESH_CACHE/tools/bin"
RUN_DIR="$ROOT/.run"
LOG_DIR="$RUN_DIR/logs"
PID_DIR="$RUN_DIR/pids"
export PATH="$TOOLS_BIN:$PATH"

TANSU_VERSION="0.6.0"
KAFKA_PORT="${KAFKA_PORT:-9092}"
NATS_PORT="${NATS_PORT:-4222}"
POSTGRES_PORT="${POSTGRES_PORT:-5432}"
REDIS_PORT="${REDIS_PORT:-6379}"

# The services and their ports (DESIGN.md); the order is the start order.
SERVICES=(user-service product-service order-service payment-service notification-service bridge gateway)
declare -A SERVICE_PORT=(
  [user-service]=8080 [product-service]=8081 [order-service]=8082 [payment-service]=8083
  [notification-service]=8084 [bridge]=8085 [gateway]=8000
)
declare -A SERVICE_DB=(
  [user-service]=shop_users [product-service]=shop_products [order-service]=shop_orders
  [payment-service]=shop_payments [notification-service]=shop_notifications
)
DATABASES=(shop_users shop_products shop_orders shop_payments shop_notifications)

say() { printf '\033[1m==>\033[0m %s\n' "$*"; }
warn() { printf '\033[33mwarning:\033[0m %s\n' "$*" >&2; }
die() { printf '\033[31merror:\033[0m %s\n' "$*" >&2; exit 1; }

# port_open PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_for_port NAME PORT SECONDS: fails early when NAME's process (if we started it) died.
wait_for_port() {
  local name=$1 port=$2 seconds=$3 i pidfile="$PID_DIR/${1,,}.pid"
  for ((i = 0; i < seconds * 10; i++)); do
    port_open "$port" && return 0
    if [[ -f $pidfile ]] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      tail -5 "$LOG_DIR/${1,,}.log" >&2 || true
      die "$name exited before opening port $port (log: $LOG_DIR/${1,,}.log)"
    fi
    sleep 0.1
  done
  die "$name did not open port $port within ${seconds}s (logs: $LOG_DIR)"
}

# wait_for_http NAME URL SECONDS
wait_for_http() {
  local name=$1 url=$2 seconds=$3 i
  for ((i = 0; i < seconds * 10; i++)); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# docker_engine: true only when a Docker engine answers (the client alone is not enough).
docker_engine() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }

# mark_started WHAT: remember that we started WHAT, so `down` stops only that.
mark_started() { mkdir -p "$RUN_DIR"; grep -qxF "$1" "$RUN_DIR/started" 2>/dev/null || echo "$1" >>"$RUN_DIR/started"; }
we_started() { grep -qxF "$1" "$RUN_DIR/started" 2>/dev/null; }
forget_started() { [[ -f "$RUN_DIR/started" ]] && sed -i "/^$1\$/d" "$RUN_DIR/started" || true; }

# start_background NAME COMMAND...: runs COMMAND detached, logs and pid under .run/.
start_background() {
  local name=$1
  shift
  mkdir -p "$LOG_DIR" "$PID_DIR"
  setsid "$@" >>"$LOG_DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$PID_DIR/$name.pid"
  mark_started "$name"
}

# stop_pidfile NAME: SIGTERM, wait up to 15 s, then SIGKILL.
stop_pidfile() {
  local name=$1 pidfile="$PID_DIR/$1.pid" pid i
  [[ -f $pidfile ]] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && { warn "$name ignored SIGTERM, killing"; kill -KILL "$pid" 2>/dev/null || true; }
    echo "stopped $name"
  fi
  rm -f "$pidfile"
  forget_started "$name"
}
