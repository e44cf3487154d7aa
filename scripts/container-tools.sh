#!/usr/bin/env bash
# Installs what the container test and the Kubernetes check need, each only when missing:
# podman, runc and debootstrap from Debian's packages (apt-get), and podman-compose and
# kubernetes-validate from PyPI into a virtualenv of their own, $TOOLS_VENV (pinned versions;
# Debian's podman-compose 1.0.3 has no `config` command). Prints the virtualenv's path last.
#
# Environment: TOOLS_VENV ($HOME/.cache/choreo-ci/venv). Needs root for apt-get.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TOOLS_VENV="${TOOLS_VENV:-$HOME/.cache/choreo-ci/venv}"
PODMAN_COMPOSE_VERSION=1.6.0
KUBERNETES_VALIDATE_VERSION=1.37.0

packages=()
command -v podman >/dev/null 2>&1 || packages+=(podman)
command -v runc >/dev/null 2>&1 || packages+=(runc)
command -v debootstrap >/dev/null 2>&1 || packages+=(debootstrap)
if ((${#packages[@]})); then
  step "apt-get install ${packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${packages[@]}" >/dev/null
fi

want="podman-compose==$PODMAN_COMPOSE_VERSION kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
if [[ "$(cat "$TOOLS_VENV/.choreo-tools" 2>/dev/null)" != "$want" ]]; then
  step "virtualenv $TOOLS_VENV: $want"
  if ! python3 -m venv --clear "$TOOLS_VENV" >/dev/null 2>&1; then
    # Debian's python3 keeps ensurepip in a package of its own.
    apt-get install -y -q --no-install-recommends python3-venv >/dev/null
    python3 -m venv --clear "$TOOLS_VENV"
  fi
  # shellcheck disable=SC2086 # $want is two requirement specifiers
  "$TOOLS_VENV/bin/pip" install -q --disable-pip-version-check $want
  echo "$want" >"$TOOLS_VENV/.choreo-tools"
fi
echo "$TOOLS_VENV"
