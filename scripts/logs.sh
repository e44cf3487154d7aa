#!/usr/bin/env bash
# Follows the logs of the services started by scripts/up.sh (all three, or the one named).
# Usage: scripts/logs.sh [orders|billing|shipping|observer]
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

services=("${PROCESSES[@]}")
if (($#)) && [[ -n "$1" ]]; then
  port_of "$1" >/dev/null # rejects an unknown name
  services=("$1")
fi
files=()
for service in "${services[@]}"; do
  [[ -f "$(log_file "$service")" ]] && files+=("$(log_file "$service")")
done
((${#files[@]})) || die "no logs in run/logs/ yet; start the suite with 'make up'"
exec tail -n "${LINES_BACK:-50}" -F "${files[@]}"
