#!/usr/bin/env bash
# Makes the base image the service images are built on where no image registry is reachable:
# `debootstrap --variant=minbase bookworm` from Debian's package mirror (the one this machine's
# apt uses), trimmed of package caches, documentation and translations, then `podman import`ed as
# $BASE_IMAGE. It has what deploy/Dockerfile's runtime stage needs (bash, groupadd, useradd) and
# the glibc of bookworm, which binaries built on a bookworm host run on.
#
# Cached: when $BASE_IMAGE exists already it does nothing (REBUILD=1 makes it again). About a
# minute when it has to run. Needs root (debootstrap chroots), podman and debootstrap.
#
# Environment: BASE_IMAGE (localhost/choreo-base:bookworm), DEBIAN_MIRROR (from apt's sources,
# else http://deb.debian.org/debian), REBUILD=1, PODMAN_RUNTIME (runc).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BASE_IMAGE="${BASE_IMAGE:-localhost/choreo-base:bookworm}"
SUITE=bookworm

# apt_mirror: the first Debian archive this machine's apt uses for the main suite (deb822
# sources first, then the one-line format), so the base comes from the mirror the host already
# trusts and reaches. Security and updates suites are skipped: debootstrap wants the main archive.
apt_mirror() {
  local file line
  for file in /etc/apt/sources.list.d/*.sources; do
    [[ -f "$file" ]] || continue
    while IFS= read -r line; do
      if [[ "$line" =~ ^URIs:[[:space:]]*([^[:space:]]+) && "${BASH_REMATCH[1]}" != *security* ]]; then
        echo "${BASH_REMATCH[1]%/}"
        return
      fi
    done <"$file"
  done
  for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f "$file" ]] || continue
    while IFS= read -r line; do
      if [[ "$line" =~ ^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+)[[:space:]]+${SUITE}[[:space:]] ]]; then
        echo "${BASH_REMATCH[2]%/}"
        return
      fi
    done <"$file"
  done
  echo "http://deb.debian.org/debian"
}

PODMAN=(podman --runtime "${PODMAN_RUNTIME:-runc}")
command -v podman >/dev/null 2>&1 || die "podman is missing (apt-get install podman runc)"

if [[ "${REBUILD:-0}" != 1 ]] && "${PODMAN[@]}" image exists "$BASE_IMAGE"; then
  ok "base image $BASE_IMAGE exists (REBUILD=1 makes it again)"
  exit 0
fi

[[ $EUID -eq 0 ]] || die "debootstrap needs root: run this as root"
command -v debootstrap >/dev/null 2>&1 || die "debootstrap is missing (apt-get install debootstrap)"

MIRROR="${DEBIAN_MIRROR:-$(apt_mirror)}"
step "Base image $BASE_IMAGE: debootstrap --variant=minbase $SUITE from $MIRROR"
WORK="$(mktemp -d /var/tmp/choreo-base.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
started=$SECONDS
if ! debootstrap --variant=minbase "$SUITE" "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
  tail -n 20 "$WORK/debootstrap.log" >&2
  die "debootstrap failed (above: the end of its log)"
fi
info "debootstrap took $((SECONDS - started))s"

# What an image never needs: the downloaded packages, apt's lists (an image build that installs
# something runs apt-get update first, as with debian:bookworm-slim), documentation, translations.
rootfs="$WORK/rootfs"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
  "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
  "$rootfs"/usr/share/locale/* "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/*
for tool in bash groupadd useradd; do
  chroot "$rootfs" sh -c "command -v $tool" >/dev/null || die "the root file system has no $tool"
done

step "podman import -> $BASE_IMAGE"
tar --numeric-owner -C "$rootfs" -c . |
  "${PODMAN[@]}" import --quiet \
    --change 'CMD ["/bin/bash"]' \
    --change "LABEL org.opencontainers.image.description=\"Debian $SUITE minbase from $MIRROR (scripts/container-base.sh)\"" \
    --message "debootstrap --variant=minbase $SUITE $MIRROR" \
    - "$BASE_IMAGE" >/dev/null
ok "$BASE_IMAGE: $("${PODMAN[@]}" image inspect --format '{{.Size}}' "$BASE_IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}'), made in $((SECONDS - started))s"
