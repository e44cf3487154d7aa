#!/usr/bin/env bash
# Starts the whole suite on this machine: makes sure RabbitMQ is reachable (starting a locally
# installed one if needed), builds the release binaries, starts orders, billing, shipping and
# the observer (its live page on OBSERVER_PORT; OBSERVER=0 leaves it out) in the background (logs in run/logs, pids in run/pids, SQLite files in run/data), waits until each
# /readyz answers 200, then runs scripts/demo.sh.
#
# Environment: ORDERS_PORT, BILLING_PORT, SHIPPING_PORT, OBSERVER_PORT (8080 to 8083);
# CHOREO_AMQP_URL and every other CHOREO_* setting are passed to the services unchanged;
# ORDERS_AMQP_URL, BILLING_AMQP_URL, SHIPPING_AMQP_URL, OBSERVER_AMQP_URL give one service its
# own broker URL; READY_TIMEOUT (60 s); SKIP_BUILD=1 starts the binaries already in
# target/release without running cargo.
#
# Broker users: with none of those URLs set, every process runs on its own broker user in vhost
# `choreo` (BROKER_USERS=own, the default): scripts/users.sh loads deploy/rabbitmq/definitions.json
# with generated passwords into the local broker first. When it cannot (rabbitmqctl needs root or
# password-less sudo), or with BROKER_USERS=guest, they all run as guest in vhost `/`.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

READY_TIMEOUT="${READY_TIMEOUT:-60}"  # seconds for all three /readyz to answer 200
BROKER_TIMEOUT="${BROKER_TIMEOUT:-90}"  # seconds for a locally started RabbitMQ to finish booting

AMQP_URL="${CHOREO_AMQP_URL:-${ORDERS_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}}"
BROKER_USERS="${BROKER_USERS:-own}"
case "$BROKER_USERS" in
  own | guest) ;;
  *) die "BROKER_USERS is '$BROKER_USERS': it is 'own' (a user per process, the default) or 'guest'" ;;
esac
# URLs given by the caller are used as they are.
for variable in CHOREO_AMQP_URL ORDERS_AMQP_URL BILLING_AMQP_URL SHIPPING_AMQP_URL OBSERVER_AMQP_URL; do
  [[ -z "${!variable:-}" ]] || BROKER_USERS=given
done

# Host and port of an amqp:// or amqps:// URL (user info, vhost and query removed); the URL is
# $1, by default the first of CHOREO_AMQP_URL's.
broker_address() {
  local url="${1:-${AMQP_URL%%,*}}"
  local rest="${url#*://}" default_port=5672
  [[ "$url" == amqps://* ]] && default_port=5671
  rest="${rest##*@}"
  rest="${rest%%/*}"
  rest="${rest%%\?*}"
  if [[ "$rest" =~ ^\[(.*)\](:([0-9]+))?$ ]]; then
    BROKER_HOST="${BASH_REMATCH[1]}" BROKER_PORT="${BASH_REMATCH[3]}"
  elif [[ "$rest" == *:* ]]; then
    BROKER_HOST="${rest%%:*}" BROKER_PORT="${rest##*:}"
  else
    BROKER_HOST="$rest" BROKER_PORT=""
  fi
  BROKER_HOST="${BROKER_HOST:-localhost}"
  BROKER_PORT="${BROKER_PORT:-$default_port}"
}

# broker_answers HOST PORT: succeeds when an AMQP 0-9-1 server answers there: it sends the protocol
# header and expects the first byte of the server's Connection.Start frame (frame type 1). A bare
# TCP connect is not enough: proxies and port forwards accept connections with no broker behind.
broker_answers() {
  # shellcheck disable=SC2016 # $1 and $2 expand in the inner bash
  timeout 5 bash -c '
    exec 3<>"/dev/tcp/$1/$2" || exit 1
    printf "AMQP\0\0\x09\x01" >&3
    [[ "$(head -c 1 <&3 | od -An -tx1)" == *01* ]]
  ' _ "$1" "$2" 2>/dev/null
}

no_broker_help() {
  cat >&2 <<EOF
No RabbitMQ answers at $BROKER_HOST:$BROKER_PORT (CHOREO_AMQP_URL).
Get one in either of these ways:
  * install it locally (Debian/Ubuntu):  sudo apt-get install rabbitmq-server
    then run 'make up' again; it starts a local rabbitmq-server when none answers.
  * run it in Docker, with a generated password per user (see deploy/docker-compose.yml):
      python3 scripts/broker-users.py local run/broker
      docker compose -f deploy/docker-compose.yml up -d rabbitmq
      source run/broker/urls.env && make up
EOF
}

# A list of nodes (a cluster, `make cluster`): one that answers is enough, since the services
# connect to the first that does. Nothing is started for a cluster.
ensure_cluster() {
  local url answering=0 total=0
  local -a urls
  step "Broker: the nodes of CHOREO_AMQP_URL"
  IFS=, read -ra urls <<<"$AMQP_URL"
  for url in "${urls[@]}"; do
    broker_address "$url"
    total=$((total + 1))
    if broker_answers "$BROKER_HOST" "$BROKER_PORT"; then
      answering=$((answering + 1))
      ok "$BROKER_HOST:$BROKER_PORT answers"
    else
      warn "$BROKER_HOST:$BROKER_PORT does not answer"
    fi
  done
  ((answering > 0)) || die "no node of CHOREO_AMQP_URL answers; a local cluster starts with 'make cluster'"
  info "$answering of $total nodes answer"
}

ensure_broker() {
  if [[ "$AMQP_URL" == *,* ]]; then
    ensure_cluster
    return
  fi
  broker_address
  step "Broker at $BROKER_HOST:$BROKER_PORT"
  if broker_answers "$BROKER_HOST" "$BROKER_PORT"; then
    ok "RabbitMQ answers"
    return
  fi
  case "$BROKER_HOST" in
    127.0.0.1 | localhost | ::1) ;;
    *) no_broker_help; exit 1 ;;
  esac
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    no_broker_help
    exit 1
  fi
  info "not reachable; starting the local RabbitMQ: rabbitmq-server -detached"
  if ! as_admin rabbitmq-server -detached; then
    die "rabbitmq-server -detached failed (it must run as root or as the rabbitmq user: try 'sudo rabbitmq-server -detached' or 'sudo systemctl start rabbitmq-server')"
  fi
  # `await_startup` fails at once while the Erlang node is not registered yet, then waits for
  # the RabbitMQ application to boot: retry it until the deadline.
  info "waiting for it (rabbitmqctl await_startup, at most ${BROKER_TIMEOUT}s)"
  local deadline=$((SECONDS + BROKER_TIMEOUT))
  until as_admin rabbitmqctl -q -t 10 await_startup >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      die "RabbitMQ did not finish starting within ${BROKER_TIMEOUT}s; see /var/log/rabbitmq/"
    fi
    sleep 1
  done
  until broker_answers "$BROKER_HOST" "$BROKER_PORT"; do
    if ((SECONDS >= deadline)); then
      die "RabbitMQ started but nothing listens on $BROKER_HOST:$BROKER_PORT; check its listeners (/etc/rabbitmq/rabbitmq.conf)"
    fi
    sleep 1
  done
  ok "RabbitMQ started"
}

refuse_if_running() {
  local service pid port running=()
  for service in "${PROCESSES[@]}"; do
    if pid="$(running_pid "$service")"; then
      running+=("$service (pid $pid)")
    elif [[ -f "$(pid_file "$service")" ]]; then
      rm -f "$(pid_file "$service")" # stale: the process is gone
    fi
  done
  if ((${#running[@]})); then
    local list
    list="$(printf ', %s' "${running[@]}")"
    die "already running: ${list:2}. Stop them first with 'make down'."
  fi
  for service in "${PROCESSES[@]}"; do
    port="$(port_of "$service")"
    if tcp_open 127.0.0.1 "$port"; then
      local owner=""
      if command -v ss >/dev/null 2>&1; then
        owner="$(ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'users:(.*)' | head -n1 || true)"
      fi
      die "port $port ($service) is already in use${owner:+ by $owner}. Stop that process or pick other ports, e.g. ${service^^}_PORT=1$port make up"
    fi
  done
}

STARTED=()

# On a failed start, stop what this run started so that the next `make up` starts clean.
stop_started() {
  if ((${#STARTED[@]})); then
    warn "stopping the services this run started (their logs stay in run/logs/)"
    bash "$ROOT/scripts/down.sh" >&2 || true
  fi
}

start_service() {
  local service="$1" port bin pid
  port="$(port_of "$service")"
  bin="$TARGET_DIR/release/$service"
  [[ -x "$bin" ]] || die "$bin is missing after the build"
  printf '\n=== %s starting %s on 127.0.0.1:%s ===\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$service" "$port" \
    >>"$(log_file "$service")"
  # `set -m` gives the service a process group of its own, so a Ctrl-C in this terminal (say,
  # during the demo) does not reach it; nohup keeps it alive when the terminal goes away.
  set -m
  # A service's own URL (ORDERS_AMQP_URL, ...) wins over the common one.
  local own_url="${service^^}_AMQP_URL"
  (
    export CHOREO_HTTP_ADDR="127.0.0.1:$port" CHOREO_DATA_DIR="$DATA_DIR" CHOREO_AMQP_URL="${!own_url:-$AMQP_URL}"
    exec nohup "$bin" >>"$(log_file "$service")" 2>&1 </dev/null
  ) &
  pid=$!
  set +m
  echo "$pid" >"$(pid_file "$service")"
  STARTED+=("$service")
  info "$service: pid $pid, http://127.0.0.1:$port, log run/logs/$service.log"
}

print_failure() {
  local service="$1" port
  port="$(port_of "$service")"
  printf '\n--- %s: GET http://127.0.0.1:%s/readyz ---\n' "$service" "$port" >&2
  curl -sS --max-time 2 "http://127.0.0.1:$port/readyz" >&2 2>&1 || true
  printf '\n--- %s: last lines of run/logs/%s.log ---\n' "$service" "$service" >&2
  tail -n 15 "$(log_file "$service")" >&2 || true
}

wait_until_ready() {
  step "Waiting for /readyz (at most ${READY_TIMEOUT}s)"
  local deadline=$((SECONDS + READY_TIMEOUT)) pending=("${PROCESSES[@]}") service code next
  while ((${#pending[@]})); do
    next=()
    for service in "${pending[@]}"; do
      if ! running_pid "$service" >/dev/null; then
        warn "$service exited during start-up"
        print_failure "$service"
        stop_started
        exit 1
      fi
      code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
        "http://127.0.0.1:$(port_of "$service")/readyz" || true)"
      if [[ "$code" == 200 ]]; then
        ok "$service is ready"
      else
        next+=("$service")
      fi
    done
    pending=("${next[@]+"${next[@]}"}")
    ((${#pending[@]})) || break
    if ((SECONDS >= deadline)); then
      warn "not ready after ${READY_TIMEOUT}s: ${pending[*]}"
      for service in "${pending[@]}"; do print_failure "$service"; done
      stop_started
      exit 1
    fi
    sleep 0.5
  done
}

step "Checking that the suite is not already running"
refuse_if_running
ok "no running services, ports $(for s in "${PROCESSES[@]}"; do printf '%s ' "$(port_of "$s")"; done)free"

# The broker first: without one, there is no point in a build that takes minutes the first time.
ensure_broker

if [[ "${SKIP_BUILD:-0}" == 1 ]]; then
  step "Using the binaries already built (SKIP_BUILD=1)"
else
  step "Building the release binaries (the first build takes several minutes)"
  # shellcheck disable=SC2046 # one --bin per process
  cargo build --release $(printf -- '--bin %s ' "${PROCESSES[@]}")
fi
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

# use_own_users: loads the users into the local broker and points each process at its own.
use_own_users() {
  if ! BROKER_HOST="$BROKER_HOST" BROKER_PORT="$BROKER_PORT" bash "$ROOT/scripts/users.sh" --quiet; then
    warn "could not load the broker users (rabbitmqctl needs root or password-less sudo): every process runs as guest. Run make up as root to get a user per process, or BROKER_USERS=guest make up to choose guest without this warning."
    BROKER_USERS=guest
    return
  fi
  # shellcheck source=/dev/null # generated by scripts/broker-users.py
  source "$BROKER_USERS_DIR/urls.env"
}
case "$BROKER_USERS" in
  own) use_own_users ;;
  given) info "broker: the URLs given (CHOREO_AMQP_URL, <SERVICE>_AMQP_URL)" ;;
esac
if [[ "$BROKER_USERS" == guest ]]; then
  info "broker: every process as guest in vhost / (BROKER_USERS=guest)"
fi

step "Starting the services"
mkdir -p "$LOG_DIR" "$PID_DIR" "$DATA_DIR"
for service in "${PROCESSES[@]}"; do
  start_service "$service"
done

wait_until_ready

step "Demo"
if ! bash "$ROOT/scripts/demo.sh"; then
  warn "the demo failed; the services keep running. Look at 'make logs', stop them with 'make down'."
  exit 1
fi

cat <<EOF

The suite is running:
  orders    http://127.0.0.1:$ORDERS_PORT
  billing   http://127.0.0.1:$BILLING_PORT
  shipping  http://127.0.0.1:$SHIPPING_PORT
$(if [[ " ${PROCESSES[*]} " == *" observer "* ]]; then
  echo "  observer  http://127.0.0.1:$OBSERVER_PORT/   <- the live map of the saga (GET /sagas?state=stuck)"
fi)
$(case "$BROKER_USERS" in
  own) echo "Broker: vhost choreo, each process on its own user (passwords in run/broker/passwords)." ;;
  guest) echo "Broker: every process as guest in vhost / (any local client may speak as any service)." ;;
esac)
Follow the logs with 'make logs'; stop everything with 'make down'.
EOF
