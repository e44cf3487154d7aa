#!/usr/bin/env bash
# A three-node RabbitMQ cluster on this machine, from the installed package, beside the system
# node (which keeps 127.0.0.1:5672):
#
#   scripts/cluster.sh up       start the nodes (if not running), join them, print the URL list
#   scripts/cluster.sh down     stop the nodes and delete their data
#   scripts/cluster.sh status   the cluster's view of itself
#   scripts/cluster.sh urls     the CHOREO_AMQP_URL value for the cluster
#   scripts/cluster.sh running  exits 0 if all three nodes answer
#
# Node N (1..3) is choreo-N@localhost, AMQP on 127.0.0.1:568N, distribution on 2568N, with its own
# config file, data and log directories under $CHOREO_CLUSTER_DIR (default
# /var/lib/rabbitmq/choreo-cluster, owned by the rabbitmq user). Runs as root or as rabbitmq.
#
# Node N connects to its peers from its own loopback address, 127.0.0.(N+1), so that a rule can
# cut one node off from the others (the fault matrix's partition rows) while clients, which
# connect from 127.0.0.1, still reach it. The nodes tick every 10 s (`net_ticktime`, 60 by
# default), so a partition is noticed within some 10 s, and handle one with `pause_minority`, the
# mode the project recommends (docs/cluster.md).
#
# The fault matrix's cluster rows (`chaos --cluster`) use `node-start N`, `pid N` and `ctl N ...`
# to act on single nodes.
set -euo pipefail

DIR="${CHOREO_CLUSTER_DIR:-/var/lib/rabbitmq/choreo-cluster}"
NODES=(1 2 3)

node_name() { echo "choreo-$1@localhost"; }
amqp_port() { echo "$((5680 + $1))"; }
dist_port() { echo "$((25680 + $1))"; }

# rabbitmqctl against node N, as the rabbitmq user (whose cookie the nodes share).
ctl() {
  local n="$1"
  shift
  rabbitmqctl -q -n "$(node_name "$n")" "$@"
}

running() { ctl "$1" -t 5 ping >/dev/null 2>&1; }

as_rabbitmq() {
  if [[ "$(id -u)" == "$(id -u rabbitmq)" ]]; then
    "$@"
  else
    # `su` without `-` keeps the RABBITMQ_* variables set below.
    su rabbitmq -s /bin/sh -c "$(printf '%q ' "$@")"
  fi
}

node_start() {
  local n="$1" home="$DIR/choreo-$1"
  if running "$n"; then
    echo "$(node_name "$n") is running"
    return
  fi
  mkdir -p "$home/data" "$home/log"
  # The system config pins the listener to 5672: each node gets its own file.
  cat >"$home/rabbitmq.conf" <<EOF
listeners.tcp.local = 127.0.0.1:$(amqp_port "$n")
cluster_name = choreo
cluster_partition_handling = pause_minority
# guest may log in over loopback only, which is all this cluster listens on.
loopback_users.guest = true
EOF
  chown -R rabbitmq:rabbitmq "$home"
  echo "starting $(node_name "$n") (AMQP 127.0.0.1:$(amqp_port "$n"))"
  RABBITMQ_NODENAME="$(node_name "$n")" \
    RABBITMQ_NODE_PORT="$(amqp_port "$n")" \
    RABBITMQ_DIST_PORT="$(dist_port "$n")" \
    RABBITMQ_CONFIG_FILE="$home/rabbitmq.conf" \
    RABBITMQ_MNESIA_BASE="$home/data" \
    RABBITMQ_LOG_BASE="$home/log" \
    RABBITMQ_PID_FILE="$home/pid" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$home/enabled_plugins" \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_connect_options [{ip,{127,0,0,$((n + 1))}}] -kernel net_ticktime 10" \
    as_rabbitmq /usr/lib/rabbitmq/bin/rabbitmq-server -detached
}

node_await() {
  local n="$1" deadline=$((SECONDS + 120))
  # await_startup fails at once while the node is not registered with epmd yet: retry.
  until ctl "$n" -t 10 await_startup >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      echo "error: $(node_name "$n") did not start; see $DIR/choreo-$n/log" >&2
      exit 1
    fi
    sleep 1
  done
}

node_stop() {
  local n="$1"
  if running "$n"; then
    echo "stopping $(node_name "$n")"
    ctl "$n" stop >/dev/null
  fi
}

urls() {
  local list=() n
  for n in "${NODES[@]}"; do
    list+=("amqp://guest:guest@127.0.0.1:$(amqp_port "$n")/%2f")
  done
  (IFS=,; echo "${list[*]}")
}

members() { ctl 1 cluster_status --formatter json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["running_nodes"]))'; }

up() {
  local n
  for n in "${NODES[@]}"; do node_start "$n"; done
  for n in "${NODES[@]}"; do node_await "$n"; done
  for n in 2 3; do
    if ! ctl 1 cluster_status --formatter json | grep -q "\"$(node_name "$n")\""; then
      echo "joining $(node_name "$n") to $(node_name 1)"
      # The CLI prints the nodes' start-up warnings: keep them out of the way unless it fails.
      if ! { ctl "$n" stop_app && ctl "$n" reset && ctl "$n" join_cluster "$(node_name 1)" &&
        ctl "$n" start_app; } >"$DIR/join-$n.log" 2>&1; then
        cat "$DIR/join-$n.log" >&2
        echo "error: $(node_name "$n") could not join $(node_name 1)" >&2
        exit 1
      fi
    fi
  done
  for n in "${NODES[@]}"; do node_await "$n"; done
  echo "cluster up: $(members) running nodes"
  echo
  echo "export CHOREO_AMQP_URL='$(urls)'"
}

down() {
  local n
  for n in "${NODES[@]}"; do node_stop "$n"; done
  rm -rf "$DIR"
  echo "cluster down; $DIR deleted"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) ctl 1 cluster_status ;;
  urls) urls ;;
  running) for n in "${NODES[@]}"; do running "$n" || exit 1; done ;;
  node-start) node_start "$2"; node_await "$2" ;;
  node-stop) node_stop "$2" ;;
  # The Erlang VM's process id of node N (for kill -9 and SIGSTOP).
  pid) cat "$DIR/choreo-$2/pid" ;;
  # rabbitmqctl against node N: `ctl 2 list_queues name leader`.
  ctl) n="$2"; shift 2; ctl "$n" "$@" ;;
  *)
    echo "usage: $0 up|down|status|urls|running|node-start N|node-stop N|pid N|ctl N ARGS..." >&2
    exit 2
    ;;
esac
