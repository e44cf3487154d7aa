#!/usr/bin/env bash
# Gives the local broker the suite's users: vhost `choreo`, its exchanges, queues and bindings,
# and the users orders, billing, shipping and observer with their rights, from
# deploy/rabbitmq/definitions.json. The file holds no password: scripts/broker-users.py makes one
# per user the first time (run/broker/passwords, mode 0600) and reuses it after, then writes the
# definitions with their hashes, which `rabbitmqctl import_definitions` merges into what the
# broker has. Running it again changes nothing. `make up` runs it by default; `make users` alone
# prints the variables that point the services at those users.
#
# Environment: BROKER_HOST, BROKER_PORT (127.0.0.1, 5672): where the URLs of run/broker/urls.env
# point. Needs rabbitmqctl allowed to manage the local node (root, or password-less sudo).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

step "Broker users: deploy/rabbitmq/definitions.json with generated passwords (run/broker/)"
python3 scripts/broker-users.py local "$BROKER_USERS_DIR" \
  --host "${BROKER_HOST:-127.0.0.1}" --port "${BROKER_PORT:-5672}"
# The broker reads the file itself, as the rabbitmq user: give it a copy it may read, for as
# long as the import takes.
copy="$(mktemp)"
trap 'rm -f "$copy"' EXIT
cp "$BROKER_USERS_DIR/definitions.json" "$copy"
chmod 644 "$copy"
as_admin rabbitmqctl -q import_definitions "$copy"
ok "vhost choreo; users orders, billing, shipping, observer (passwords in run/broker/passwords)"

if [[ "${1:-}" != --quiet ]]; then
  cat <<'OUT'

`make up` runs every process on its own user by default. To point other commands at them:

  source run/broker/urls.env    # CHOREO_DECLARE_TOPOLOGY=own and <SERVICE>_AMQP_URL

Compose reads run/broker/definitions.json and run/broker/<service>.env (deploy/docker-compose.yml).
OUT
fi
