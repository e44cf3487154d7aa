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
git archive "$rev" | tar -x -C "$src"
echo "building the services of $rev ($(git rev-parse --short "$rev")) in target/baseline"
CARGO_TARGET_DIR="$PWD/target/baseline" cargo build --release --manifest-path "$src/Cargo.toml" \
  --bin orders --bin billing --bin shipping \
  $(test -d "$src/services/observer" && echo --bin observer)
