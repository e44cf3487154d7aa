#!/usr/bin/env bash
# make mutants: cargo-mutants on the files that carry the guarantees (docs/testing.md), one group
# at a time, each with the tests that can catch its mutants. Results per group in
# target/mutants/<group>/mutants.out (caught.txt, missed.txt, timeout.txt, unviable.txt; the
# runtime group writes three: consumer, relay, inbox); the
# summary is kept by hand in docs/mutation-results.md.
#
# Usage: scripts/mutants.sh [GROUP...]   (decisions, runtime, store when none is named); a group is
# decisions, consumer, relay, inbox or store, and runtime stands for consumer, relay and inbox.
# MUTANTS_ARGS adds options (below).
# Needs RabbitMQ and PostgreSQL as `make test` does (not for `decisions`). Installs cargo-mutants
# from crates.io when missing. Not in CI: run it before merging a change to these files.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() { printf 'error: %s\n' "$*" >&2; exit 1; }

groups=()
for group in "${@:-decisions runtime store}"; do
  for one in $group; do
    case "$one" in
      runtime) groups+=(consumer relay inbox) ;;
      decisions | consumer | relay | inbox | store) groups+=("$one") ;;
      *) die "unknown group $one (decisions, runtime = consumer relay inbox, store)" ;;
    esac
  done
done

# The version whose options (--baseline skip, --test-tool nextest, -E) and output (mutants.out)
# this script was written against.
MUTANTS_VERSION=27.1.0
if ! cargo mutants --version 2>/dev/null | grep -qx "cargo-mutants $MUTANTS_VERSION"; then
  echo "cargo-mutants $MUTANTS_VERSION is missing; installing it from crates.io"
  cargo install cargo-mutants --version "$MUTANTS_VERSION" --locked
fi
cargo mutants --version

# Every group is tested in one scratch copy of this tree (target/mutants/tree; the working tree
# is never touched) built into one target directory of its own (target/mutants/build), kept
# between runs so that a second run builds incrementally. The runtime and store groups build the
# same three packages, so no feature set is ever rebuilt; without debug info, a mutant's build
# links in about 13 s instead of 25; and choreo-e2e is built without its load tools (bench and
# chaos, its default feature `tools`), which no test runs. The tests run under nextest, which
# stops at the first failure, each group choosing the tests that can catch its mutants; the
# end-to-end tests give up waiting after 12 s instead of 30 (E2E_DEADLINE_SECS), since a caught
# mutant mostly shows as a saga that never ends. nextest's `mutants` profile
# (.config/nextest.toml) ends a test still running after 30 s, and cargo-mutants gives up on a
# run after 90 s ("timeout"); both count as caught.
# MUTANTS_ARGS adds options to cargo-mutants: `--list` only lists, `--iterate` tests again only
# what was missed last time.
read -r -a extra <<<"${MUTANTS_ARGS:-}"
common=(--no-shuffle --build-timeout 900 "${extra[@]}")
packages=(--test-package choreo-messaging --test-package choreo-store --test-package choreo-e2e)

needs_services() {
  python3 scripts/amqp-ping.py --timeout 10 || die "RabbitMQ on 127.0.0.1:5672 (guest/guest) is needed"
  bash scripts/rabbitmq-heal.sh || die "RabbitMQ on 127.0.0.1:5672 refuses quorum queues with at-least-once dead-lettering"
  pg_isready -q -h 127.0.0.1 || die "PostgreSQL on 127.0.0.1:5432 is needed"
  cargo nextest --version >/dev/null 2>&1 || cargo install cargo-nextest --locked
  sweep
}

root=$PWD
# Files are compared by content and copied with the time of the copy, never with their own
# (no `rsync -t`): cargo decides what to rebuild by modification time, and a file put back to an
# older time than the last mutant's build (a group's last mutant, restored by cargo-mutants, then
# copied again by the next group's rsync -a) would leave that mutant in the build. That once made
# a group's unmutated tests fail with the previous group's last mutant in them.
scratch() {
  mkdir -p target/mutants/tree
  rsync -rlp --checksum --delete --exclude /target --exclude /.git ./ target/mutants/tree/
}

# mutate GROUP FILTER [cargo-mutants options...]: one group's mutants in the scratch tree, tested
# by the tests nextest's FILTER selects. Results in target/mutants/GROUP/mutants.out.
# The group's tests are first run here unmutated (a test that fails anyway would make every
# mutant look caught), which also builds the unmutated tree; cargo-mutants's own baseline would
# only build and run the same again, so it is skipped.
mutate() {
  local group=$1 filter=$2 try
  shift 2
  for try in 1 2; do
    # Exit status 3: the unmutated tests failed because the broker refused the suites' queues,
    # which the heal below may cure (`||` turns `set -e` off inside, hence the explicit exits).
    local status=0
    (
      cd target/mutants/tree || exit 1
      export CARGO_TARGET_DIR="$root/target/mutants/build" CARGO_PROFILE_DEV_DEBUG=0 E2E_DEADLINE_SECS=12
      if [[ " ${extra[*]} " != *" --list "* ]]; then
        if ! cargo nextest run -p choreo-messaging -p choreo-store -p choreo-e2e --no-default-features --profile mutants \
          --test-threads 8 --no-fail-fast -E "$filter"; then
          python3 "$root/scripts/amqp-ping.py" --timeout 10 --quorum || exit 3
          die "$group: its tests fail with no mutant applied"
        fi
      fi
      cargo mutants --in-place --test-tool nextest --no-default-features --timeout 90 --baseline skip "${common[@]}" \
        -o "$root/target/mutants/$group" "${packages[@]}" "$@" \
        -- --profile mutants --test-threads 8 -E "$filter" ||
        echo "($group: some mutants were missed; see target/mutants/$group/mutants.out/missed.txt)"
    ) || status=$?
    ((status == 0 || status == 3)) || exit "$status"
    # A broker that broke during the group fails every later mutant's tests, which then count
    # as caught: such a run says nothing. Two ways seen here: RabbitMQ 3.10 refusing every
    # connection after test processes were ended mid-publish (twice in the relay group), and
    # its dead-letter workers' supervisor gone, so that every suite's topology fails with
    # INTERNAL_ERROR (the relay group, 2026-12-05; scripts/rabbitmq-heal.sh). The second is
    # healed here and the group run again, once.
    if ((status == 0)) && python3 scripts/amqp-ping.py --timeout 10 --quorum; then
      sweep
      return 0
    fi
    python3 scripts/amqp-ping.py --timeout 10 ||
      die "$group: RabbitMQ stopped answering during the group; its verdicts are void (restart the broker and run the group again)"
    echo "$group: RabbitMQ refused the suites' queues during the group, so its verdicts are void; healing it and running the group again"
    bash scripts/rabbitmq-heal.sh || die "$group: RabbitMQ still refuses the suites' queues"
    sweep
  done
  die "$group: RabbitMQ broke again during the second run; its verdicts are void"
}

# A test ended by SIGTERM (nextest's timeout) removes its suite's queues and databases itself
# (tests/src/leftovers.rs); one ended by SIGKILL cannot. Whatever is left is swept after each
# group, before it piles up: a few hundred quorum queues left by killed tests once made RabbitMQ
# 3.10 stop answering logins here.
sweep() {
  cargo run -q -p choreo-e2e --bin e2e-service -- sweep
}

# e2e tests, by module and name prefix, as a nextest filter.
e2e() { printf 'package(choreo-e2e) & test(/^(%s)/)' "$1"; }
unit() { printf 'package(%s) & test(/^%s/)' "$1" "$2"; }

# The end-to-end tests that break a guarantee on purpose, grouped by what they break.
dies='guarantees::a_(crashed|service_that_dies|service_stopped)|restarts::a_database_outage'
refused='guarantees::a_publish_|restarts::(a_graceful_stop|a_service_stopped_mid_saga|without_a_broker)|saga::every_(published_event|commit)'
duplicates='guarantees::only_the_inbox|delivery::(a_burst|an_invalid_event_queued)'

for group in "${groups[@]}"; do
  case "$group" in
    decisions)
      # The pure decisions: each package's own unit and property tests, no broker, in the same
      # scratch tree and build directory as the other groups (a copy of its own would be built
      # from nothing at every run).
      scratch
      mkdir -p "target/mutants/$group"
      (
        cd target/mutants/tree
        export CARGO_TARGET_DIR="$root/target/mutants/build" CARGO_PROFILE_DEV_DEBUG=0
        cargo mutants --in-place --timeout 180 "${common[@]}" -o "$root/target/mutants/$group" \
          -f shared/events/src/provenance.rs \
          -f services/billing/src/rules.rs \
          -f services/shipping/src/rules.rs \
          -f services/orders/src/lifecycle.rs ||
          echo "($group: some mutants were missed; see target/mutants/$group/mutants.out/missed.txt)"
      )
      ;;
    consumer)
      # The runtime: the consumer, the relay and its confirmed publisher, the inbox, each with its
      # own tests. Functions that only log or trace are left out, and so are the mutants that
      # docs/mutation-results.md shows to be harmless ("Left out of the runs"): each would cost a
      # whole run of the group's tests, to be missed again.
      needs_services
      scratch
      mutate consumer "$(unit choreo-messaging consumer::) | $(unit choreo-messaging outcome::) | $(e2e "$dies|$duplicates|delivery::|guarantees::a_batch_|saga::every_commit")" \
        -f shared/messaging/src/consumer/delivery_loop.rs -f shared/messaging/src/consumer/transaction.rs \
        -f shared/messaging/src/consumer/copies.rs -f shared/messaging/src/consumer/handler.rs \
        -f shared/messaging/src/outcome.rs -E 'message_span|uuid_like' \
        -E 'replace < with <= in ConsumerLoop<H>::run|replace > with >= in ConsumerLoop<H>::process_batch'
      ;;
    relay)
      needs_services
      scratch
      mutate relay "$(unit choreo-messaging outbox::) | $(e2e "$refused|delivery::a_message_with_an_expiration")" \
        -f shared/messaging/src/outbox.rs -f shared/messaging/src/publisher.rs -E 'warn_undrained' \
        -E 'replace > with < in Relay::(run_pipelined|run_claiming)|replace > with >= in Relay::publish_claimed|AbortOnDrop<T>>::drop with \(\)'
      ;;
    inbox)
      needs_services
      scratch
      mutate inbox "$(unit choreo-messaging inbox::) | $(e2e "$duplicates")" \
        -f shared/messaging/src/inbox.rs
      ;;
    store)
      # The store's unit of work: begin, run, commit or roll back, on both backends (PostgreSQL's
      # held transaction is the relay's, so the refused publishes on PostgreSQL test it).
      needs_services
      scratch
      mutate store "package(choreo-store) | $(unit choreo-messaging consumer::) | $(e2e "$dies|guarantees::(two_requests_racing|a_publish_.*postgresql)")" \
        -f shared/store/src/sqlite.rs -f shared/store/src/postgres.rs -f shared/store/src/lib.rs \
        -F 'commit_group|write_loop|fn run|Database::write|Held::|run_in|rollback'
      ;;
  esac
done
