#!/usr/bin/env bash
# A RabbitMQ node that speaks AMQP over TLS only, beside the system node, for the TLS test
# (`make tls-test`, CI) and for trying amqps:// by hand:
#
#   scripts/tls-broker.sh up     make the certificates (once), start the node, print its variables
#   scripts/tls-broker.sh down   stop the node and delete its data and certificates
#   scripts/tls-broker.sh env    the variables the TLS test reads (AMQPS_URL, TLS_CERTS_DIR)
#
# The node is choreo-tls@localhost: AMQPS on 127.0.0.1:5690 (no plain listener), distribution on
# 25690, its own config, data and logs under $CHOREO_TLS_DIR (default
# /var/lib/rabbitmq/choreo-tls, owned by the rabbitmq user). It verifies clients: a connection
# without a certificate signed by its CA is refused (verify_peer, fail_if_no_peer_cert).
#
# Certificates (openssl, EC P-256, valid 30 days) in $CHOREO_TLS_DIR/certs:
#   ca.pem                 the test CA; signs the two below
#   server.pem/.key        the node's (SAN localhost and 127.0.0.1)
#   client.pem/.key        a client's (CN choreo-client)
#   other-ca.pem           an unrelated CA, and other-client.pem/.key signed by it: for refusals
# Test certificates only: the keys are written unencrypted and readable by the rabbitmq user.
set -euo pipefail

DIR="${CHOREO_TLS_DIR:-/var/lib/rabbitmq/choreo-tls}"
CERTS="$DIR/certs"
NODE="choreo-tls@localhost"
PORT="${CHOREO_TLS_PORT:-5690}"
DIST_PORT="${CHOREO_TLS_DIST_PORT:-25690}"

ctl() { rabbitmqctl -q -n "$NODE" "$@"; }
running() { ctl -t 5 ping >/dev/null 2>&1; }

as_rabbitmq() {
  if [[ "$(id -u)" == "$(id -u rabbitmq)" ]]; then
    "$@"
  else
    # `su` without `-` keeps the RABBITMQ_* variables set below.
    su rabbitmq -s /bin/sh -c "$(printf '%q ' "$@")"
  fi
}

# ca NAME SUBJECT: a self-signed CA certificate NAME.pem with its key NAME.key.
ca() {
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj "$2" -keyout "$CERTS/$1.key" -out "$CERTS/$1.pem" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

# leaf NAME CA SUBJECT USAGE [SAN]: NAME.pem and NAME.key, signed by CA, for USAGE
# (serverAuth or clientAuth).
leaf() {
  local name="$1" issuer="$2" subject="$3" usage="$4" san="${5:-}" ext
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$CERTS/$name.key"
  openssl req -new -key "$CERTS/$name.key" -subj "$subject" -out "$CERTS/$name.csr"
  ext="$CERTS/$name.ext"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature"
    echo "extendedKeyUsage=$usage"
    [[ -z "$san" ]] || echo "subjectAltName=$san"
  } >"$ext"
  openssl x509 -req -in "$CERTS/$name.csr" -CA "$CERTS/$issuer.pem" -CAkey "$CERTS/$issuer.key" \
    -CAcreateserial -days 30 -extfile "$ext" -out "$CERTS/$name.pem" 2>/dev/null
  rm -f "$CERTS/$name.csr" "$ext"
}

certificates() {
  if [[ -f "$CERTS/other-client.pem" ]]; then
    return
  fi
  command -v openssl >/dev/null || { echo "error: openssl is needed (apt-get install openssl)" >&2; exit 1; }
  mkdir -p "$CERTS"
  ca ca "/CN=choreo-test-ca"
  leaf server ca "/CN=localhost" serverAuth "DNS:localhost,IP:127.0.0.1"
  leaf client ca "/CN=choreo-client" clientAuth
  ca other-ca "/CN=another-ca"
  leaf other-client other-ca "/CN=choreo-client" clientAuth
  echo "certificates in $CERTS"
}

up() {
  if running; then
    echo "$NODE is running"
    env_vars
    return
  fi
  mkdir -p "$DIR/data" "$DIR/log"
  certificates
  cat >"$DIR/rabbitmq.conf" <<EOF
listeners.tcp = none
listeners.ssl.default = 127.0.0.1:$PORT
ssl_options.cacertfile = $CERTS/ca.pem
ssl_options.certfile = $CERTS/server.pem
ssl_options.keyfile = $CERTS/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = true
# guest may log in over loopback only, which is all this node listens on.
loopback_users.guest = true
EOF
  : >"$DIR/enabled_plugins"
  chown -R rabbitmq:rabbitmq "$DIR"
  echo "starting $NODE (AMQPS 127.0.0.1:$PORT)"
  RABBITMQ_NODENAME="$NODE" \
    RABBITMQ_DIST_PORT="$DIST_PORT" \
    RABBITMQ_CONFIG_FILE="$DIR/rabbitmq.conf" \
    RABBITMQ_MNESIA_BASE="$DIR/data" \
    RABBITMQ_LOG_BASE="$DIR/log" \
    RABBITMQ_PID_FILE="$DIR/pid" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/enabled_plugins" \
    as_rabbitmq /usr/lib/rabbitmq/bin/rabbitmq-server -detached
  local deadline=$((SECONDS + 120))
  # await_startup fails at once while the node is not registered with epmd yet: retry.
  until ctl -t 10 await_startup >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      echo "error: $NODE did not start; see $DIR/log" >&2
      exit 1
    fi
    sleep 1
  done
  echo "$NODE up"
  env_vars
}

env_vars() {
  echo "export AMQPS_URL='amqps://guest:guest@127.0.0.1:$PORT/%2f' TLS_CERTS_DIR='$CERTS'"
}

down() {
  if running; then
    echo "stopping $NODE"
    ctl stop >/dev/null
  fi
  rm -rf "$DIR"
  echo "$NODE down; $DIR deleted"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) env_vars ;;
  *)
    echo "usage: $0 up|down|env" >&2
    exit 2
    ;;
esac
