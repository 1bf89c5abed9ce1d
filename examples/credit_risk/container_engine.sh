#!/usr/bin/env bash
# Which container engine can run containers here. Prints `podman` or `docker`, the first one
# installed whose engine answers `<engine> info` within SCOREGATE_ENGINE_PROBE_SECONDS (15);
# otherwise prints one line saying why none can, and exits 1. A client on PATH is not enough:
# a docker CLI with no daemon behind it ("Cannot connect to the Docker daemon") is common.
# demo.sh skips its container step with that line; scoregate itself asks the same question
# (scoregate.packaging.engine.Engine.detect).
set -uo pipefail
limit=${SCOREGATE_ENGINE_PROBE_SECONDS:-15}
reasons=()
for engine in ${SCOREGATE_CONTAINER_ENGINE:-podman docker}; do
    command -v "$engine" >/dev/null 2>&1 || continue
    if command -v timeout >/dev/null 2>&1; then
        said=$(timeout "$limit" "$engine" info 2>&1 >/dev/null)
    else
        said=$("$engine" info 2>&1 >/dev/null)
    fi
    status=$?
    if [ "$status" -eq 0 ]; then
        echo "$engine"
        exit 0
    fi
    if [ "$status" -eq 124 ]; then
        reasons+=("$engine did not answer '$engine info' within $limit s")
    else
        said=$(printf '%s' "$said" | tr -s '\n\t' '  ' | cut -c1-200)
        reasons+=("$engine does not answer: '$engine info' failed: ${said:-exit $status}")
    fi
done
if [ ${#reasons[@]} -eq 0 ]; then
    echo "no podman or docker installed (.ci/containers.sh installs podman)"
else
    printf 'no working container engine: %s' "${reasons[0]}"
    for reason in "${reasons[@]:1}"; do printf '; %s' "$reason"; done
    echo
fi
exit 1
