#!/usr/bin/env bash
# make mutants: cargo-mutants on the files that carry the guarantees (docs/testing.md), one group
# at a time, each with the tests that can catch its mutants. Results per group in
# target/mutants/<group>/mutants.out (caught.txt, missed.txt, timeout.txt, unviable.txt); the
# summary is kept by hand in docs/mutation-results.md.
#
# Usage: scripts/mutants.sh [decisions] [runtime] [store]   (all three when none is named);
# MUTANTS_ARGS=--in-place to reuse target/ (below).
# Needs RabbitMQ and PostgreSQL as `make test` does (not for `decisions`). Installs cargo-mutants
# from crates.io when missing. Not in CI: run it before merging a change to these files.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() { printf 'error: %s\n' "$*" >&2; exit 1; }

if ! cargo mutants --version >/dev/null 2>&1; then
  echo "cargo-mutants is missing; installing it from crates.io"
  cargo install cargo-mutants --locked
fi
cargo mutants --version

groups=("$@")
((${#groups[@]})) || groups=(decisions runtime store)

# Every group: a fresh copy of the tree (the working tree is never touched), no test run longer
# than 3 minutes (a mutant that hangs a test is "timeout", which counts as caught).
# MUTANTS_ARGS adds options: `--in-place` mutates this tree instead of a copy and so reuses
# target/ (much faster after a build; edit nothing while it runs), `--list` only lists.
common=(--timeout 180 --build-timeout 900 --no-shuffle)
read -r -a extra <<<"${MUTANTS_ARGS:-}"
common+=("${extra[@]}")

needs_services() {
  python3 scripts/amqp-ping.py --timeout 10 || die "RabbitMQ on 127.0.0.1:5672 (guest/guest) is needed"
  pg_isready -q -h 127.0.0.1 || die "PostgreSQL on 127.0.0.1:5432 is needed"
}

for group in "${groups[@]}"; do
  out="target/mutants/$group"
  mkdir -p "$out"
  case "$group" in
    decisions)
      # The pure decisions: each package's own unit and property tests, no broker.
      cargo mutants "${common[@]}" -o "$out" \
        -f shared/events/src/provenance.rs \
        -f services/billing/src/rules.rs \
        -f services/shipping/src/rules.rs \
        -f services/orders/src/lifecycle.rs
      ;;
    runtime)
      # The consumer, the relay, the inbox and the confirmed publisher: the runtime's unit tests
      # and the end-to-end tests that break a guarantee on purpose. Functions that only log or
      # trace are left out.
      needs_services
      cargo mutants "${common[@]}" -o "$out" \
        -f shared/messaging/src/consumer.rs \
        -f shared/messaging/src/outbox.rs \
        -f shared/messaging/src/inbox.rs \
        -f shared/messaging/src/publisher.rs \
        -E 'message_span|uuid_like|Fate::outcome|warn_undrained' \
        --test-package choreo-messaging --test-package choreo-e2e \
        -- -- consumer:: outbox:: inbox:: publisher:: guarantees:: restarts:: delivery::
      ;;
    store)
      # The store's unit of work: begin, run, commit or roll back, on both backends.
      needs_services
      cargo mutants "${common[@]}" -o "$out" \
        -f shared/store/src/sqlite.rs \
        -f shared/store/src/postgres.rs \
        -f shared/store/src/lib.rs \
        -F 'commit_group|write_loop|fn run|Database::write|Held::|run_in|rollback' \
        --test-package choreo-store --test-package choreo-e2e \
        -- -- tests:: guarantees:: restarts::
      ;;
    *) die "unknown group $group (decisions, runtime, store)" ;;
  esac || echo "($group: some mutants were missed; see $out/mutants.out/missed.txt)"
done
