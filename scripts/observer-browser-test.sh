#!/usr/bin/env bash
# The observer's live page in headless Chromium (tests/browser/test_observer.py): builds the four
# release binaries, makes sure Playwright for Python (a virtualenv under ~/.cache) and Debian's
# chromium are there (installing them only when missing; no `playwright install`: Playwright
# drives /usr/bin/chromium), then runs the test. Its screenshots land in target/artifacts/.
#
# Environment: SKIP_BUILD=1 uses the binaries already in target/release; UPDATE_DOCS=1 also
# copies the screenshot to docs/observer.png; CHROMIUM (default /usr/bin/chromium);
# PLAYWRIGHT_VENV (default ~/.cache/choreo-observer-venv). Needs RabbitMQ on CHOREO_AMQP_URL.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

VENV="${PLAYWRIGHT_VENV:-$HOME/.cache/choreo-observer-venv}"
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

as_root() {
  if [[ $EUID -eq 0 ]]; then "$@"; else sudo -n "$@"; fi
}

if [[ ! -x "$CHROMIUM" ]]; then
  step "Installing Debian's chromium (apt-get)"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium
fi
if ! "$VENV/bin/python" -c 'import playwright' >/dev/null 2>&1; then
  step "Installing Playwright for Python in $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q playwright
fi

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  step "Building the release binaries"
  cargo build --release --bin orders --bin billing --bin shipping --bin observer
fi

step "The observer's page in headless Chromium"
args=(--bin-dir "$TARGET_DIR/release")
[[ "${UPDATE_DOCS:-0}" == 1 ]] && args+=(--update-docs)
"$VENV/bin/python" tests/browser/test_observer.py "${args[@]}"
