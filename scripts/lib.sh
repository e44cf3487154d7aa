# shellcheck shell=bash
# Shared by the scripts in this directory: paths, the service table and small helpers.
# Sourced, never run. Every script works from the repository root whatever the caller's cwd.

# shellcheck disable=SC2034 # these are used by the scripts that source this file
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN_DIR="$ROOT/run"
LOG_DIR="$RUN_DIR/logs"
PID_DIR="$RUN_DIR/pids"
DATA_DIR="$RUN_DIR/data"
# The broker users' generated passwords and what is made from them (scripts/broker-users.py).
BROKER_USERS_DIR="$RUN_DIR/broker"

# The saga's services (what the containers and the demo cover), and every process `make up`
# runs: the saga's services and the observer, which watches the saga and takes part in nothing
# (OBSERVER=0 leaves it out).
SERVICES=(orders billing shipping)
if [[ "${OBSERVER:-1}" == 0 ]]; then
  PROCESSES=("${SERVICES[@]}")
else
  PROCESSES=("${SERVICES[@]}" observer)
fi
ORDERS_PORT="${ORDERS_PORT:-8080}"
BILLING_PORT="${BILLING_PORT:-8081}"
SHIPPING_PORT="${SHIPPING_PORT:-8082}"
OBSERVER_PORT="${OBSERVER_PORT:-8083}"

if [[ -t 1 && -z "${NO_COLOR:-}" ]]; then
  _bold=$'\e[1m' _red=$'\e[31m' _yellow=$'\e[33m' _green=$'\e[32m' _reset=$'\e[0m'
else
  _bold='' _red='' _yellow='' _green='' _reset=''
fi

step() { printf '%s==> %s%s\n' "$_bold" "$*" "$_reset"; }
info() { printf '    %s\n' "$*"; }
ok()   { printf '    %sok%s  %s\n' "$_green" "$_reset" "$*"; }
warn() { printf '%swarning:%s %s\n' "$_yellow" "$_reset" "$*" >&2; }
die()  { printf '%serror:%s %s\n' "$_red" "$_reset" "$*" >&2; exit 1; }

# port_of SERVICE: the HTTP port of a service.
port_of() {
  case "$1" in
    orders) echo "$ORDERS_PORT" ;;
    billing) echo "$BILLING_PORT" ;;
    shipping) echo "$SHIPPING_PORT" ;;
    observer) echo "$OBSERVER_PORT" ;;
    *) die "unknown service '$1'" ;;
  esac
}

# Runs a command as root when we are not root and password-less sudo works; the Debian
# rabbitmq-server and rabbitmqctl wrappers refuse other users.
as_admin() {
  if [[ $EUID -ne 0 ]] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo -n -E "$@"
  else
    "$@"
  fi
}

pid_file() { echo "$PID_DIR/$1.pid"; }
log_file() { echo "$LOG_DIR/$1.log"; }

# running_pid SERVICE: prints the pid from the service's pid file and succeeds when that process
# is alive and still is the service (not a zombie, not an unrelated process that reused the pid).
running_pid() {
  local service="$1" file pid state comm
  file="$(pid_file "$service")"
  [[ -f "$file" ]] || return 1
  pid="$(<"$file")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  if command -v ps >/dev/null 2>&1; then
    read -r state comm < <(ps -o stat= -o comm= -p "$pid" 2>/dev/null) || return 1
    [[ "$state" != Z* ]] || return 1
    [[ "${comm##*/}" == "$service" ]] || return 1
  fi
  echo "$pid"
}

# tcp_open HOST PORT: succeeds when something accepts TCP connections there (3 s at most).
tcp_open() {
  # shellcheck disable=SC2016 # $1 and $2 expand in the inner bash
  timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}
