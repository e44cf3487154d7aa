#!/usr/bin/env bash
# Loads deploy/rabbitmq/definitions.json into the local broker (vhost `choreo`, its exchanges,
# queues and bindings, and the users orders, billing, shipping and choreo-admin with their demo
# passwords), then prints what `make up` needs to run every service on its own user. The
# definitions are merged into what the broker has: running it again changes nothing, but it
# sets the demo passwords again (README, "Broker users").
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

step "Loading deploy/rabbitmq/definitions.json into the local RabbitMQ"
# The broker reads the file itself, as the rabbitmq user: give it a copy it may read.
copy="$(mktemp)"
trap 'rm -f "$copy"' EXIT
cp deploy/rabbitmq/definitions.json "$copy"
chmod 644 "$copy"
rabbitmqctl -q import_definitions "$copy"
ok "vhost choreo, users orders, billing, shipping, observer, choreo-admin"

cat <<'OUT'

Run the suite with a user per service (demo passwords: change them, README "Broker users"):

  export CHOREO_DECLARE_TOPOLOGY=own
  export ORDERS_AMQP_URL='amqp://orders:orders-demo@127.0.0.1:5672/choreo'
  export BILLING_AMQP_URL='amqp://billing:billing-demo@127.0.0.1:5672/choreo'
  export SHIPPING_AMQP_URL='amqp://shipping:shipping-demo@127.0.0.1:5672/choreo'
  export OBSERVER_AMQP_URL='amqp://observer:observer-demo@127.0.0.1:5672/choreo'
  make up
OUT
