#!/usr/bin/env bash
# `make up` as a user runs it, in both broker modes (CI runs this):
#   1. by default: every process on its own broker user in vhost `choreo` (scripts/users.sh);
#   2. BROKER_USERS=guest: every process as guest in vhost `/`.
# Each time the demo must end as expected (up.sh fails otherwise), and each process's publisher
# and consumer connections must log in as the user and vhost of that mode (rabbitmqctl
# list_connections). Stops what it started, even on failure. Needs the release binaries
# (SKIP_BUILD=1 skips the build) and rabbitmqctl allowed to manage the local node.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

# The suite's own broker URLs would decide the mode themselves.
unset CHOREO_AMQP_URL ORDERS_AMQP_URL BILLING_AMQP_URL SHIPPING_AMQP_URL OBSERVER_AMQP_URL
trap 'bash scripts/down.sh >/dev/null 2>&1 || true' EXIT

# connections_log_in_as USER_OF VHOST: every process's two connections are there, each logged in
# as USER_OF's user (`own`: the process's own name; otherwise that user) in VHOST.
connections_log_in_as() {
  local user_of="$1" vhost="$2" listed process role user line
  listed="$(as_admin rabbitmqctl -q list_connections user vhost client_properties)"
  for process in "${PROCESSES[@]}"; do
    user="$user_of"
    [[ "$user_of" != own ]] || user="$process"
    for role in publisher consumer; do
      line="$(grep -F "\"connection_name\",\"$process-$role\"" <<<"$listed" || true)"
      [[ -n "$line" ]] || die "no connection named $process-$role"
      [[ "$(wc -l <<<"$line")" == 1 ]] || die "more than one connection named $process-$role"
      [[ "$line" == "$user"$'\t'"$vhost"$'\t'* ]] ||
        die "$process-$role logs in as '$(cut -f1,2 <<<"$line")', not '$user' in '$vhost'"
    done
    ok "$process: its connections log in as $user in vhost $vhost"
  done
}

step "make up (own broker users, the default)"
bash scripts/up.sh
connections_log_in_as own choreo
bash scripts/down.sh

step "BROKER_USERS=guest make up"
BROKER_USERS=guest SKIP_BUILD=1 bash scripts/up.sh
connections_log_in_as guest /
bash scripts/down.sh

step "make up in both broker modes: ok"
