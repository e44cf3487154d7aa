#!/usr/bin/env bash
# Stops the services started by scripts/up.sh: SIGTERM to each pid in run/pids, then up to
# STOP_TIMEOUT seconds (20) for each to finish its work and exit; SIGKILL only as a last resort.
# Idempotent: nothing running is fine. RabbitMQ is left alone (other things may use it).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STOP_TIMEOUT="${STOP_TIMEOUT:-20}"

step "Stopping the services"
declare -A signalled=()
# Every process `make up` may have started, the observer too (even when OBSERVER=0 now).
ALL=("${SERVICES[@]}" observer)
for service in "${ALL[@]}"; do
  file="$(pid_file "$service")"
  if pid="$(running_pid "$service")"; then
    kill -TERM "$pid" 2>/dev/null || true
    signalled[$service]="$pid"
    info "$service: SIGTERM sent to pid $pid"
  elif [[ -f "$file" ]]; then
    info "$service: not running (stale pid file removed)"
    rm -f "$file"
  else
    info "$service: not running"
  fi
done

# All were signalled together; each gets STOP_TIMEOUT seconds from then to exit.
deadline=$((SECONDS + STOP_TIMEOUT))
for service in "${ALL[@]}"; do
  pid="${signalled[$service]:-}"
  [[ -n "$pid" ]] || continue
  while running_pid "$service" >/dev/null && ((SECONDS < deadline)); do
    sleep 0.2
  done
  if running_pid "$service" >/dev/null; then
    warn "$service (pid $pid) did not exit within ${STOP_TIMEOUT}s of SIGTERM; sending SIGKILL (see run/logs/$service.log)"
    kill -KILL "$pid" 2>/dev/null || true
    kill_deadline=$((SECONDS + 5))
    while running_pid "$service" >/dev/null && ((SECONDS < kill_deadline)); do
      sleep 0.2
    done
  else
    ok "$service stopped"
  fi
  rm -f "$(pid_file "$service")"
done
