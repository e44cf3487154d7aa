#!/usr/bin/env bash
# build-baseline.sh REV: builds the release service binaries of git revision REV (the observer's
# too, where REV has one) into target/baseline/release, for `make bench BASELINE=REV` to measure
# against in the same run, or for `bench --bin-dir target/baseline/release` to measure alone.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rev="${1:?usage: build-baseline.sh REV}"
src="target/baseline/src"
rm -rf "$src"
mkdir -p "$src"
# -m: the files get the time of extraction, not the commit's. With the commit's, a revision
# older than the last one built here looked older than its build artifacts, and cargo reused
# them (an earlier revision's choreo-store linked into a later one's services).
git archive "$rev" | tar -x -m -C "$src"
echo "building the services of $rev ($(git rev-parse --short "$rev")) in target/baseline"
CARGO_TARGET_DIR="$PWD/target/baseline" cargo build --release --manifest-path "$src/Cargo.toml" \
  --bin orders --bin billing --bin shipping \
  $(test -d "$src/services/observer" && echo --bin observer)
