#!/usr/bin/env bash
# Stops the services, then deletes run/ (logs, pid files, SQLite data) and the cargo build
# output (target/). RabbitMQ and its queues are left alone.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

bash "$ROOT/scripts/down.sh"
step "Removing run/"
rm -rf "$RUN_DIR"
step "Removing the build output (cargo clean)"
cargo clean
