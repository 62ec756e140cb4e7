#!/usr/bin/env bash
# The container tests: builds the sitesync image (deploy/image/build.sh) and the test
# program, then brings up the Compose hierarchy of deploy/compose/ under a project name of
# its own, runs the fault scenarios (tests/containers/README.md) and removes the project
# with its volumes, also when a scenario fails or the run is interrupted.
#
#   tests/containers/run.sh                      # every scenario
#   SITESYNC_SCENARIOS=kill-primary,pause-parent tests/containers/run.sh
#
# Prints "SKIP" and succeeds when no Docker engine answers.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
  echo "SKIP container tests: no Docker engine answers (docker info failed)"
  exit 0
fi
if ! docker compose version >/dev/null 2>&1 && ! docker-compose version >/dev/null 2>&1; then
  echo "SKIP container tests: neither \`docker compose\` nor \`docker-compose\` is installed"
  exit 0
fi

export SITESYNC_IMAGE="${SITESYNC_IMAGE:-sitesync:ci-$$}"
export SITESYNC_COMPOSE_PROJECT="sitesync-ct-$$-$(date +%s)"
export SITESYNC_CONTAINER_TESTS_DIR="$root/tests/containers"
if docker compose version >/dev/null 2>&1; then compose=(docker compose); else compose=(docker-compose); fi
# The test program removes its project itself; this also covers an interrupted run.
cleanup() {
  if [[ "${SITESYNC_KEEP_PROJECT:-0}" != 1 ]]; then
    "${compose[@]}" --project-name "$SITESYNC_COMPOSE_PROJECT" \
      --file deploy/compose/docker-compose.yml --file tests/containers/compose.test.yml \
      --profile operator --profile faults down -v --remove-orphans --timeout 5 >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
started=$SECONDS
deploy/image/build.sh "$SITESYNC_IMAGE"
cargo build --release --locked -p sitesync-tests --bin container-tests
status=0
"${CARGO_TARGET_DIR:-target}/release/container-tests" || status=$?
cleanup
# The image of this run goes too, once no container uses it.
if [[ "${SITESYNC_KEEP_PROJECT:-0}" != 1 && "$SITESYNC_IMAGE" == sitesync:ci-* ]]; then
  docker image rm "$SITESYNC_IMAGE" >/dev/null 2>&1 || true
fi
echo "container tests: $((SECONDS - started)) s"
exit "$status"
