#!/usr/bin/env bash
# The suite in containers, for real, with Podman and no image registry:
#   1. the base image (scripts/container-base.sh: debootstrap + podman import; cached);
#   2. the images of the three services and the observer from deploy/Dockerfile, on that base, with the release binaries
#      built on this host (`--target prebuilt`: no Rust toolchain image is needed);
#   3. one container per process, as `podman run` would run it in production: non-root, read-only
#      root file system, no capabilities, its data on a named volume. Checked: uid/gid 10001,
#      the root file system refuses writes, no capabilities, health check `healthy`;
#   4. the three saga paths through them (scripts/demo.sh: completed, payment declined, shipment
#      failed and refunded), which the observer's container must show finished, then `podman
#      stop` (SIGTERM): each must exit 0;
#   5. docker-compose.yml: `podman-compose config`, then brought up for real with
#      docker-compose.host.yml (local images, host broker), the saga again, stop, exit codes.
#
# The containers use the host's network so they reach the broker on 127.0.0.1 as `guest` (who may
# log in from localhost only). The run gets a vhost of its own on the local broker, created and
# deleted with rabbitmqctl, so nothing it declares outlives it or meets another run's names.
# Every container, volume and the vhost are removed on exit, whatever happened; on a failure the
# containers' last log lines are printed first.
#
# Needs root (or a rabbitmqctl that works), podman, runc, debootstrap, curl, python3; and
# podman-compose for step 5 (skipped with a warning when missing, unless REQUIRE_COMPOSE=1).
# Environment: ORDERS_PORT, BILLING_PORT, SHIPPING_PORT, OBSERVER_PORT (18080 to 18083), BROKER_PORT (5672),
# HEALTHY_TIMEOUT (60 s), STOP_TIMEOUT (30 s), SKIP_BUILD=1 (use the binaries already built),
# CONTAINER_ENV (more settings for the containers of step 3, `NAME=VALUE ...`),
# PODMAN_RUNTIME (runc: crun fails on this kernel's cgroup layout), PODMAN_ULIMITS (the lowered
# limits runc needs here), BASE_IMAGE, CHOREO_IMAGE_PREFIX, CHOREO_IMAGE_TAG, PODMAN_COMPOSE,
# TOOLS_VENV.
set -euo pipefail
export ORDERS_PORT="${ORDERS_PORT:-18080}" BILLING_PORT="${BILLING_PORT:-18081}" SHIPPING_PORT="${SHIPPING_PORT:-18082}" OBSERVER_PORT="${OBSERVER_PORT:-18083}"
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

HEALTHY_TIMEOUT="${HEALTHY_TIMEOUT:-60}"
STOP_TIMEOUT="${STOP_TIMEOUT:-30}"
BROKER_PORT="${BROKER_PORT:-5672}"
export BASE_IMAGE="${BASE_IMAGE:-localhost/choreo-base:bookworm}"
export CHOREO_IMAGE_PREFIX="${CHOREO_IMAGE_PREFIX:-localhost/choreo-}" CHOREO_IMAGE_TAG="${CHOREO_IMAGE_TAG:-local}"
PODMAN=(podman_ --runtime "${PODMAN_RUNTIME:-runc}")
# podman_: podman minus the error it logs for every container with a health check when there is
# no systemd to run health-check timers (wait_healthy runs the checks itself instead).
podman_() { podman "$@" 2> >(grep -v 'unable to get systemd connection' >&2); }
read -r -a ULIMITS <<<"${PODMAN_ULIMITS:---ulimit nofile=1024:1024 --ulimit nproc=1024:1024}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
# CONTAINER_ENV: more settings for every container of step 3, `NAME=VALUE NAME=VALUE`.
EXTRA_ENV=()
for setting in ${CONTAINER_ENV:-}; do EXTRA_ENV+=(-e "$setting"); done

RUN_ID="ct-$(date -u +%Y%m%d%H%M%S)-$$"
VHOST="choreo-$RUN_ID"
export CHOREO_AMQP_URL="amqp://guest:guest@127.0.0.1:$BROKER_PORT/$VHOST"
LABEL="choreo.container-test=$RUN_ID"
COMPOSE_PROJECT="choreo-$RUN_ID"
COMPOSE_FILES=(-f deploy/docker-compose.yml -f deploy/docker-compose.host.yml)

image_of() { echo "${CHOREO_IMAGE_PREFIX}$1:${CHOREO_IMAGE_TAG}"; }

for tool in podman curl python3 rabbitmqctl; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is missing"
done

# ---- clean-up, always ---------------------------------------------------------------------------

VHOST_CREATED=0 CONTEXT_DIR="" COMPOSE=() COMPOSE_UP=0
dump_logs() {
  local id name
  for id in $("${PODMAN[@]}" ps -a -q --filter "label=$LABEL" 2>/dev/null); do
    name="$("${PODMAN[@]}" inspect --format '{{.Name}}' "$id" 2>/dev/null || echo "$id")"
    printf '\n--- %s: %s, last log lines ---\n' "$name" \
      "$("${PODMAN[@]}" inspect --format '{{.State.Status}} exit={{.State.ExitCode}}' "$id" 2>/dev/null)" >&2
    "${PODMAN[@]}" logs --tail 25 "$id" >&2 2>&1 || true
  done
}
# A signal's trap runs when the command in progress ends, inside its redirections (a check
# that sends its output to /dev/null): the clean-up writes to the script's own stdout and stderr.
exec {STDOUT}>&1 {STDERR}>&2
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  exec 1>&"$STDOUT" 2>&"$STDERR"
  ((rc == 0)) || dump_logs
  step "Cleaning up"
  if ((COMPOSE_UP)); then
    "${COMPOSE[@]}" down -v -t 5 >/dev/null 2>&1
  fi
  local ids
  mapfile -t ids < <("${PODMAN[@]}" ps -a -q --filter "label=$LABEL")
  ((${#ids[@]} == 0)) || "${PODMAN[@]}" rm -f -v -t 5 "${ids[@]}" >/dev/null
  mapfile -t ids < <("${PODMAN[@]}" volume ls -q --filter "label=$LABEL")
  ((${#ids[@]} == 0)) || "${PODMAN[@]}" volume rm -f "${ids[@]}" >/dev/null
  if ((VHOST_CREATED)); then
    rabbitmqctl -q delete_vhost "$VHOST" >/dev/null || warn "could not delete the vhost $VHOST"
  fi
  [[ -z "$CONTEXT_DIR" ]] || rm -rf "$CONTEXT_DIR"
  info "containers, volumes and the vhost $VHOST removed"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- checks -------------------------------------------------------------------------------------

# inspect NAME FORMAT: one field of a container.
inspect() { "${PODMAN[@]}" inspect --format "$2" "$1"; }

# wait_healthy NAME...: runs each container's health check (the image's HEALTHCHECK) until it
# passes. No systemd here to run podman's health timers, so this runs them: `podman healthcheck
# run` is the check podman's timer would run, and it records the status podman inspect shows.
wait_healthy() {
  local deadline=$((SECONDS + HEALTHY_TIMEOUT)) pending=("$@") next name state service
  while ((${#pending[@]})); do
    next=()
    for name in "${pending[@]}"; do
      state="$(inspect "$name" '{{.State.Status}}')"
      [[ "$state" == running ]] || die "$name is $state (exit code $(inspect "$name" '{{.State.ExitCode}}')) instead of running"
      if "${PODMAN[@]}" healthcheck run "$name" >/dev/null 2>&1; then
        state="$(inspect "$name" '{{.State.Healthcheck.Status}}')"
        [[ "$state" == healthy ]] || die "$name: the health check passed but podman says '$state'"
        ok "$name is healthy"
      else
        next+=("$name")
      fi
    done
    pending=("${next[@]+"${next[@]}"}")
    ((${#pending[@]})) || break
    if ((SECONDS >= deadline)); then
      for name in "${pending[@]}"; do
        service="${name%_1}" service="${service##*[-_]}"
        warn "$name: GET /readyz: $(curl -sS --max-time 2 "http://127.0.0.1:$(port_of "$service")/readyz" 2>&1)"
      done
      die "not healthy after ${HEALTHY_TIMEOUT}s: ${pending[*]} (their /readyz did not answer 200)"
    fi
    sleep 1
  done
}

# check_hardening NAME SERVICE: the main process (pid 1 in the container) runs as 10001:10001
# with no capabilities, the root file system refuses writes, the data directory takes them.
check_hardening() {
  local name="$1" service="$2" status
  status="$("${PODMAN[@]}" exec "$name" grep -E '^(Uid|Gid|CapEff):' /proc/1/status)"
  [[ "$status" =~ Uid:[[:space:]]+10001[[:space:]]+10001[[:space:]]+10001[[:space:]]+10001 ]] ||
    die "$name: pid 1 does not run as uid 10001: $status"
  [[ "$status" =~ Gid:[[:space:]]+10001[[:space:]]+10001[[:space:]]+10001[[:space:]]+10001 ]] ||
    die "$name: pid 1 does not run as gid 10001: $status"
  [[ "$status" =~ CapEff:[[:space:]]+0+$ ]] || die "$name: pid 1 has capabilities: $status"
  [[ "$(inspect "$name" '{{.HostConfig.ReadonlyRootfs}}')" == true ]] || die "$name: root file system is writable"
  if "${PODMAN[@]}" exec "$name" bash -c ': >/usr/local/bin/written' 2>/dev/null; then
    die "$name: writing to /usr/local/bin succeeded on a read-only root file system"
  fi
  "${PODMAN[@]}" exec "$name" test -s "/var/lib/choreo/$service.db" || die "$name: no database in /var/lib/choreo"
  ok "$name: uid/gid 10001, no capabilities, read-only root, data in /var/lib/choreo/$service.db"
}

# stop_and_check NAME...: SIGTERM (the images' STOPSIGNAL) through `podman stop`, which would
# send SIGKILL after STOP_TIMEOUT seconds; each must have exited 0 by itself.
stop_and_check() {
  local name code started=$SECONDS
  "${PODMAN[@]}" stop -t "$STOP_TIMEOUT" "$@" >/dev/null
  for name in "$@"; do
    code="$(inspect "$name" '{{.State.ExitCode}}')"
    [[ "$code" == 0 ]] || die "$name exited $code after SIGTERM, not 0"
    ok "$name: stopped by SIGTERM, exit code 0"
  done
  info "stopped in $((SECONDS - started))s"
}

# observer_saw_them: the observer's container lists the demo's three sagas, each finished.
observer_saw_them() {
  [[ " ${PROCESSES[*]} " == *" observer "* ]] || return 0
  local deadline=$((SECONDS + 30)) url="http://127.0.0.1:$OBSERVER_PORT/sagas?limit=50" finished
  until finished="$(curl -sS --max-time 2 "$url" | python3 -c '
import json, sys
sagas = json.load(sys.stdin)["sagas"]
print(sum(1 for saga in sagas if saga["state"] in ("completed", "failed", "cancelled")))
' 2>/dev/null)" && ((finished >= 3)); do
    ((SECONDS < deadline)) || die "the observer shows ${finished:-no} finished sagas after 30s, not the demo's 3 ($url)"
    sleep 1
  done
  ok "the observer shows the demo's sagas finished ($finished)"
}

run_saga() {
  step "The three saga paths through the containers (scripts/demo.sh)"
  if ! DEMO_TIMEOUT="${DEMO_TIMEOUT:-30}" NO_COLOR=1 bash scripts/demo.sh | sed 's/^/    /'; then
    die "the saga did not end as expected through the containers"
  fi
}

# ---- 1. base image, 2. service images -----------------------------------------------------------

START=$SECONDS
for service in "${PROCESSES[@]}"; do
  port="$(port_of "$service")"
  ! tcp_open 127.0.0.1 "$port" || die "port $port ($service) is in use; pick others with ${service^^}_PORT"
done
tcp_open 127.0.0.1 "$BROKER_PORT" || die "no broker listens on 127.0.0.1:$BROKER_PORT"

bash scripts/container-base.sh

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  step "Release binaries (cargo build --release)"
  cargo build --release --bin orders --bin billing --bin shipping --bin observer
fi
step "Service images from deploy/Dockerfile (--target prebuilt, RUNTIME_IMAGE=$BASE_IMAGE)"
# The build context is a directory with just the four binaries: the repository's context would
# leave them out (.dockerignore excludes target/), and nothing else is needed.
CONTEXT_DIR="$(mktemp -d /var/tmp/choreo-context.XXXXXX)"
for service in "${PROCESSES[@]}"; do
  cp "$TARGET_DIR/release/$service" "$CONTEXT_DIR/" || die "no $TARGET_DIR/release/$service: build it first"
done
# Rebuilding leaves untagged images behind (the previous images, intermediate stages): those
# that appear during these builds are removed afterwards, and nothing else.
mapfile -t dangling_before < <(podman images -q --no-trunc --filter dangling=true)
for service in "${PROCESSES[@]}"; do
  started=$SECONDS
  "${PODMAN[@]}" build --quiet --format docker "${ULIMITS[@]}" \
    -f deploy/Dockerfile \
    --target prebuilt --build-arg SERVICE="$service" --build-arg RUNTIME_IMAGE="$BASE_IMAGE" \
    -t "$(image_of "$service")" "$CONTEXT_DIR" >/dev/null
  ok "$(image_of "$service") ($((SECONDS - started))s)"
done
mapfile -t dangling_after < <(podman images -q --no-trunc --filter dangling=true)
for id in "${dangling_after[@]}"; do
  [[ " ${dangling_before[*]} " == *" $id "* ]] || podman rmi "$id" >/dev/null 2>&1 || true
done

# ---- 3. containers, 4. saga and stop -------------------------------------------------------------

step "Broker vhost $VHOST"
rabbitmqctl -q add_vhost "$VHOST" >/dev/null
VHOST_CREATED=1
rabbitmqctl -q set_permissions -p "$VHOST" guest '.*' '.*' '.*' >/dev/null
ok "$CHOREO_AMQP_URL"

step "Containers: podman run --read-only --cap-drop ALL --network host"
NAMES=()
for service in "${PROCESSES[@]}"; do
  name="choreo-$RUN_ID-$service"
  "${PODMAN[@]}" volume create --label "$LABEL" "$name-data" >/dev/null
  "${PODMAN[@]}" run -d --name "$name" --label "$LABEL" \
    --network host --read-only --read-only-tmpfs=false --tmpfs /tmp \
    --cap-drop ALL --security-opt no-new-privileges "${ULIMITS[@]}" \
    -v "$name-data:/var/lib/choreo" \
    -e CHOREO_AMQP_URL -e CHOREO_HTTP_ADDR="127.0.0.1:$(port_of "$service")" "${EXTRA_ENV[@]}" \
    "$(image_of "$service")" >/dev/null
  NAMES+=("$name")
  info "$name: http://127.0.0.1:$(port_of "$service")"
done
wait_healthy "${NAMES[@]}"
for i in "${!PROCESSES[@]}"; do
  check_hardening "${NAMES[$i]}" "${PROCESSES[$i]}"
done

run_saga
observer_saw_them

step "Stopping them: podman stop (SIGTERM)"
stop_and_check "${NAMES[@]}"

# ---- 5. docker-compose.yml ----------------------------------------------------------------------

# podman-compose: $PODMAN_COMPOSE, else the one on the PATH, else the one scripts/container-tools.sh
# installed.
PODMAN_COMPOSE="${PODMAN_COMPOSE:-$(command -v podman-compose || true)}"
tools_compose="${TOOLS_VENV:-$HOME/.cache/choreo-ci/venv}/bin/podman-compose"
[[ -n "$PODMAN_COMPOSE" || ! -x "$tools_compose" ]] || PODMAN_COMPOSE="$tools_compose"
if [[ -z "$PODMAN_COMPOSE" ]]; then
  [[ "${REQUIRE_COMPOSE:-0}" != 1 ]] || die "podman-compose is missing (scripts/container-tools.sh installs it)"
  warn "podman-compose is missing: the compose file was not checked (scripts/container-tools.sh installs it)"
else
  step "docker-compose.yml: podman-compose config"
  # The files it reads from run/broker/ (generated passwords; the host's broker does not use them).
  python3 scripts/broker-users.py local run/broker
  "$PODMAN_COMPOSE" -f deploy/docker-compose.yml config >/dev/null
  ok "deploy/docker-compose.yml parses"
  # The base file's `rabbitmq` image cannot be pulled here: bring up the three services from the
  # images just built, against the host's broker (docker-compose.host.yml, --no-deps).
  step "docker-compose.yml + docker-compose.host.yml: up, for real"
  COMPOSE=("$PODMAN_COMPOSE" --podman-args "--runtime ${PODMAN_RUNTIME:-runc}" -p "$COMPOSE_PROJECT" "${COMPOSE_FILES[@]}")
  "${COMPOSE[@]}" config >/dev/null
  COMPOSE_UP=1
  "${COMPOSE[@]}" --podman-run-args "--label $LABEL ${ULIMITS[*]}" \
    up -d --no-deps "${PROCESSES[@]}" >"$CONTEXT_DIR/compose-up.log" 2>&1 ||
    { cat "$CONTEXT_DIR/compose-up.log" >&2; die "podman-compose up failed"; }
  NAMES=()
  for service in "${PROCESSES[@]}"; do
    NAMES+=("${COMPOSE_PROJECT}_${service}_1")
  done
  wait_healthy "${NAMES[@]}"
  for i in "${!PROCESSES[@]}"; do
    check_hardening "${NAMES[$i]}" "${PROCESSES[$i]}"
  done
  run_saga
  observer_saw_them
  step "Stopping them: podman-compose stop (SIGTERM)"
  started=$SECONDS
  "${COMPOSE[@]}" stop >/dev/null 2>&1
  for name in "${NAMES[@]}"; do
    code="$(inspect "$name" '{{.State.ExitCode}}')"
    [[ "$code" == 0 ]] || die "$name exited $code after SIGTERM, not 0"
    ok "$name: stopped by SIGTERM, exit code 0"
  done
  info "stopped in $((SECONDS - started))s"
fi

step "Containers pass ($((SECONDS - START))s)"
