#!/usr/bin/env bash
# Places three demo orders against running services and follows each to its terminal status:
#   1. happy path           2 x 1500 EUR to AT      -> completed
#   2. over the charge limit 1 x 150000 EUR to DE   -> cancelled (payment_declined)
#   3. unserviceable country "AQ"                    -> cancelled (shipping_failed)
# Prints each order's journey (its history) as it completes, and exits non-zero when an order
# does not reach the expected status within DEMO_TIMEOUT seconds (30).
#
# Needs curl and python3 (for JSON). Ports: ORDERS_PORT, BILLING_PORT, SHIPPING_PORT.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DEMO_TIMEOUT="${DEMO_TIMEOUT:-30}"
ORDERS_URL="http://127.0.0.1:$ORDERS_PORT"
BILLING_URL="http://127.0.0.1:$BILLING_PORT"
SHIPPING_URL="http://127.0.0.1:$SHIPPING_PORT"
# Idempotency keys are unique per run: the same key with another body would be a 409.
RUN_ID="$(date -u +%Y%m%dT%H%M%S)-$$"

command -v python3 >/dev/null 2>&1 || die "python3 is needed to read the JSON answers"
command -v curl >/dev/null 2>&1 || die "curl is needed"

# order_body QUANTITY UNIT_PRICE_CENTS NAME LINE1 CITY POSTAL_CODE COUNTRY
order_body() {
  printf '{"customer_id":"demo-customer","currency":"EUR","items":[{"sku":"BOOK","quantity":%s,"unit_price_cents":%s}],"shipping_address":{"name":"%s","line1":"%s","city":"%s","postal_code":"%s","country":"%s"}}' "$@"
}

# json_field FIELD < JSON: prints one top-level field.
json_field() {
  python3 -c 'import json, sys; v = json.load(sys.stdin).get(sys.argv[1]); print("" if v is None else v)' "$1"
}

# render MODE EXPECTED_STATUS EXPECTED_REASON LABEL < ORDER_JSON
# MODE final: prints nothing and exits 3 while the order is not terminal; otherwise prints its
# journey and exits 0 when it ended as expected, 1 when not. MODE timeout: prints what there is.
RENDER="$(cat <<'PY'
import json, re, sys

mode, want_status, want_reason, label = sys.argv[1:5]
order = json.load(sys.stdin)
status = order.get("status") or "?"
reason = order.get("cancellation_reason")
terminal = status in ("completed", "cancelled")
if mode == "final" and not terminal:
    sys.exit(3)


def clock(at):
    m = re.search(r"T(\d\d:\d\d:\d\d)(?:\.(\d+))?", at or "")
    if not m:
        return at or "?"
    return m.group(1) + "." + (m.group(2) or "").ljust(3, "0")[:3]


outcome = status + (" (%s)" % reason if reason else "")
if mode == "timeout":
    outcome = "still %s after the deadline" % outcome
print("order %s  %s    [%s]" % (order.get("id", "?"), outcome, label))
for entry in order.get("history") or []:
    print("  %s  %-20s -> %s" % (clock(entry.get("at")), entry.get("type", "?"), entry.get("status", "?")))
want = want_status + (" (%s)" % want_reason if want_reason else "")
ok = terminal and status == want_status and (reason or "") == want_reason
if not ok:
    print("  UNEXPECTED: expected " + want)
sys.exit(0 if ok else 1)
PY
)"

LABELS=() KEYS=() BODIES=() WANT_STATUS=() WANT_REASON=() IDS=()
add_order() { # LABEL KEY_SUFFIX WANT_STATUS WANT_REASON BODY
  LABELS+=("$1") KEYS+=("demo-$RUN_ID-$2") WANT_STATUS+=("$3") WANT_REASON+=("$4") BODIES+=("$5")
}
add_order "happy path: 2 x 15.00 EUR to AT" happy completed "" \
  "$(order_body 2 1500 "Ada Lovelace" "1 Main St" Vienna 1010 AT)"
add_order "over the limit: 1 x 1500.00 EUR to DE" declined cancelled payment_declined \
  "$(order_body 1 150000 "Carl Gauss" "2 Hauptstrasse" Berlin 10115 DE)"
add_order "unserviceable country: AQ" unserviceable cancelled shipping_failed \
  "$(order_body 1 1500 "Roald Amundsen" "South Pole Station" "Amundsen-Scott" 0000 AQ)"

# post_order KEY BODY: prints the HTTP status, a newline, then the answer.
post_order() {
  curl -sS --max-time 10 -w '\n%{http_code}' -X POST "$ORDERS_URL/orders" \
    -H 'Content-Type: application/json' -H "Idempotency-Key: $1" --data "$2" ||
    die "cannot reach orders at $ORDERS_URL (is the suite running? 'make up')"
}

step "Placing three orders (POST $ORDERS_URL/orders)"
for i in "${!LABELS[@]}"; do
  answer="$(post_order "${KEYS[$i]}" "${BODIES[$i]}")"
  code="${answer##*$'\n'}" body="${answer%$'\n'*}"
  [[ "$code" == 201 ]] || die "POST /orders (${LABELS[$i]}) answered $code: $body"
  IDS[i]="$(json_field id <<<"$body")"
  info "201  ${IDS[$i]}  ${LABELS[$i]}"
done

# The same request with the same Idempotency-Key must give back the same order, not a new one.
answer="$(post_order "${KEYS[0]}" "${BODIES[0]}")"
code="${answer##*$'\n'}" body="${answer%$'\n'*}"
replayed_id="$(json_field id <<<"$body" 2>/dev/null || true)"
if [[ "$code" == 200 && "$replayed_id" == "${IDS[0]}" ]]; then
  info "200  ${IDS[0]}  the first request again, same Idempotency-Key: same order"
else
  die "replaying the first request with its Idempotency-Key answered $code (id '$replayed_id'), expected 200 and ${IDS[0]}"
fi

step "Following them until each ends (at most ${DEMO_TIMEOUT}s; times in UTC)"
failed=0
pending=("${!IDS[@]}")
deadline=$((SECONDS + DEMO_TIMEOUT))
while ((${#pending[@]})); do
  next=()
  for i in "${pending[@]}"; do
    order="$(curl -sS --max-time 5 -f "$ORDERS_URL/orders/${IDS[$i]}" 2>/dev/null || true)"
    if [[ -z "$order" ]]; then
      next+=("$i")
      continue
    fi
    rc=0
    python3 -c "$RENDER" final "${WANT_STATUS[$i]}" "${WANT_REASON[$i]}" "${LABELS[$i]}" <<<"$order" || rc=$?
    case "$rc" in
      0) echo ;;
      3) next+=("$i") ;;
      *) failed=1; echo ;;
    esac
  done
  pending=("${next[@]+"${next[@]}"}")
  ((${#pending[@]})) || break
  if ((SECONDS >= deadline)); then
    failed=1
    for i in "${pending[@]}"; do
      order="$(curl -sS --max-time 5 -f "$ORDERS_URL/orders/${IDS[$i]}" 2>/dev/null || echo '{}')"
      python3 -c "$RENDER" timeout "${WANT_STATUS[$i]}" "${WANT_REASON[$i]}" "${LABELS[$i]}" <<<"$order" || true
      echo
    done
    warn "not every order ended within ${DEMO_TIMEOUT}s; look at the logs ('make logs')"
    break
  fi
  sleep 0.3
done

id="${IDS[0]}"
cat <<EOF
Try it yourself:
  curl -i -X POST $ORDERS_URL/orders -H 'Content-Type: application/json' -H 'Idempotency-Key: my-order-1' \\
    -d '${BODIES[0]}'
  curl -s $ORDERS_URL/orders/$id
  curl -s '$ORDERS_URL/orders?status=cancelled&limit=10'
  curl -s '$BILLING_URL/payments?order_id=$id'
  curl -s '$SHIPPING_URL/shipments?order_id=$id'
EOF
# The observer is optional: its URLs are printed when it answers.
OBSERVER_URL="http://127.0.0.1:$OBSERVER_PORT"
if curl -s -o /dev/null -f --max-time 2 "$OBSERVER_URL/healthz"; then
  cat <<EOF
  curl -s $OBSERVER_URL/sagas/$id    # the observer: timeline, causation tree, state
  curl -s '$OBSERVER_URL/sagas?state=stuck&limit=10'
The live map of the saga (the observer): $OBSERVER_URL/
EOF
fi

if ((failed)); then
  echo
  die "the demo did not end as expected"
fi
echo
ok "all three orders ended as expected"
