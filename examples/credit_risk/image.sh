#!/usr/bin/env bash
# Optional demo step, after demo.sh: package credit-risk@1 and @2 as OCI images, test them,
# serve @1 on a stable port, deploy @2 beside it (health + parity, then the switch), roll
# back, and render Kubernetes manifests. Needs podman or docker (`.ci/containers.sh` sets
# podman up). BASE defaults to python:3.11-slim (pulled); offline, use the debootstrap base:
#   BASE=scoregate-test-base:bookworm examples/credit_risk/image.sh
set -euo pipefail
export SCOREGATE_HOME=${SCOREGATE_HOME:-$PWD/.demo/home}
BASE=${BASE:-python:3.11-slim}
PORT=${PORT:-8090}
: "${SCOREGATE_TOKEN:?set SCOREGATE_TOKEN to a deployer's token (demo.sh printed alice's)}"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Build an image per version (offline build: pinned wheels are vendored in the context)"
scoregate image build credit-risk@1 --base "$BASE"
scoregate image build credit-risk@2 --base "$BASE"

step "Test the image: the validation suite and parity against the running container"
scoregate image test credit-risk@2

step "Serve @1 on port $PORT, then deploy @2 beside it and switch"
scoregate image run credit-risk@1 --port "$PORT"
scoregate deploy credit-risk@2 --replace credit-risk@1
curl -s "http://127.0.0.1:$PORT/models/credit-risk/predict" -H 'content-type: application/json' \
    -d '{"rows": [{"income": 52000, "age": 41, "debt_ratio": 0.3, "credit_lines": 3, "employment": "salaried", "purpose": "car"}]}'; echo

step "Rollback is one command"
scoregate deploy credit-risk@1 --replace credit-risk@2
scoregate image stop credit-risk

step "Kubernetes manifests, validated against the Kubernetes OpenAPI schemas"
scoregate k8s render credit-risk@2 --check -o "$(dirname "$SCOREGATE_HOME")/reports/credit-risk-2.k8s.yaml"
