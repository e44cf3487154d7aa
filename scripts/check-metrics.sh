#!/usr/bin/env bash
# Checks the live /metrics text of the three services with `promtool check metrics` (the
# Prometheus text format and its naming conventions: HELP on every metric, `_total` counters,
# units in names), then the alert rules of deploy/prometheus/alerts.yml (`promtool check rules`,
# `promtool test rules` on alerts.test.yml) and the queries of the Grafana dashboard
# deploy/grafana/choreo-dashboard.json (valid JSON; each query parsed by `promtool check rules`
# as a recording rule), and that every metric the rules and the queries name is one the
# services export. The text comes from the end-to-end test that runs one order of each kind and
# a duplicate (`metrics::one_order_of_each_kind_...`), which writes each service's scrape to
# target/tmp/metrics/<service>.prom; it is run here again so the text is from this build.
# Needs the broker the tests need, and promtool (Debian: `apt-get install prometheus`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v promtool >/dev/null 2>&1 || {
  echo "promtool is missing: apt-get install --no-install-recommends prometheus" >&2
  exit 1
}
dir="${CARGO_TARGET_DIR:-target}/tmp/metrics"
rm -rf "$dir"
cargo test -q -p choreo-e2e --test e2e -- \
  one_order_of_each_kind_moves_every_counter_by_exactly_what_it_does \
  a_saga_is_stuck_while_shipping_is_away_and_clears_when_it_is_back
for service in orders billing shipping observer; do
  file="$dir/$service.prom"
  [[ -s "$file" ]] || { echo "no metrics were written to $file" >&2; exit 1; }
  printf '%s: %s samples, ' "$service" "$(grep -cv '^#\|^$' "$file")"
  promtool check metrics <"$file"
  echo "promtool check metrics: ok"
done

rules=deploy/prometheus/alerts.yml
promtool check rules "$rules"
promtool test rules deploy/prometheus/alerts.test.yml
# Every choreo_* metric the rules name (a histogram's _bucket series by its family) appears in a
# scrape: a renamed metric must not leave an alert that can never fire.
exported="$(cat "$dir"/*.prom | sed -n 's/^# TYPE \([a-z_:]*\) .*/\1/p' | sort -u)"
# names_exported FILE: every choreo_* and process_* metric FILE names is exported.
names_exported() {
  local file="$1" name missing=0
  for name in $(grep -oE '(choreo|process)_[a-z_]*' "$file" | sed 's/_bucket$//' | sort -u); do
    if ! grep -qx "$name" <<<"$exported"; then
      echo "$file names $name, which no service exports" >&2
      missing=1
    fi
  done
  ((missing == 0)) || exit 1
  echo "$file: every metric it names is exported"
}
names_exported "$rules"

dashboard=deploy/grafana/choreo-dashboard.json
queries="$(mktemp --suffix=.yml)"
trap 'rm -f "$queries"' EXIT
python3 - "$dashboard" >"$queries" <<'PY'
import json, sys
board = json.load(open(sys.argv[1]))
print("groups:\n  - name: dashboard\n    rules:")
for panel in board["panels"]:
    for target in panel["targets"]:
        expr = target["expr"].replace("$__rate_interval", "5m")
        print(f"      - record: dashboard:panel_{panel['id']}_{target['refId']}")
        print(f"        expr: {json.dumps(expr)}")
PY
promtool check rules "$queries" >/dev/null || { echo "a query of $dashboard does not parse" >&2; exit 1; }
echo "$dashboard: valid JSON, every query parses"
names_exported "$dashboard"
