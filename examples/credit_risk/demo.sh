#!/usr/bin/env bash
# The credit-risk story, end to end, on the embedded defaults (SQLite + a local artifact folder):
# train, register, validate, load-test, approve with four eyes, promote, serve over HTTP,
# reproduce a served decision, monitor drift, labels and alerts, score a file in batch, audit, the UI. Run it with `make demo`; everything lives under
# $SCOREGATE_HOME (default .demo/home) and is recreated on each run.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export SCOREGATE_HOME=${SCOREGATE_HOME:-$PWD/.demo/home}
demo=$(dirname "$SCOREGATE_HOME")
work=$demo/files
reports=$demo/reports
rm -rf "$SCOREGATE_HOME" "$work" "$reports"
mkdir -p "$reports"
unset SCOREGATE_TOKEN
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
as() { local who=$1; shift; SCOREGATE_TOKEN=${tokens[$who]} "$@"; }
declare -A tokens

step "1. Train two versions of a credit-default model on synthetic applicants"
python "$here/train.py" "$work"
auc() { python -c "import json,sys; print(json.load(open('$work/metrics.json'))[sys.argv[1]])" "$1"; }

step "2. Initialise: the first admin gets a token, shown once; then two people with roles"
tokens[admin]=$(scoregate init --name admin | grep '^sg_')
tokens[alice]=$(as admin scoregate users add alice --role developer --role deployer | grep '^sg_')
tokens[victor]=$(as admin scoregate users add victor --role validator | grep '^sg_')
as admin scoregate users list

step "3. Alice registers both versions: schema inferred, lineage and environment recorded"
as alice scoregate register credit-risk "$work/v1.joblib" --flavor sklearn --train-data "$work/train.parquet" \
    --target default --metric "auc=$(auc v1)" --description "Probability of default, retail loans" \
    --owner alice --risk-tier high
as alice scoregate register credit-risk "$work/v2.joblib" --flavor sklearn --train-data "$work/train.parquet" \
    --target default --metric "auc=$(auc v2)" --parent 1
scoregate models list
scoregate models show credit-risk@2

step "4. Staging is free to move; production is gated by the high-risk-tier policy"
as alice scoregate alias set credit-risk@2 staging
scoregate predict credit-risk@staging --input "$work/rows.json"
as alice scoregate alias set credit-risk@2 production || echo "(refused: exit $?)"

step "5. A shortcut is refused: a weak run does not validate, and a report cannot be uploaded as evidence"
as alice scoregate validate credit-risk@2 --reference none --mark-validated -o "$reports/weak" | tail -n 3 \
    || echo "(recorded as it was, but not marked validated: exit $?)"
python - "$reports/weak/report.json" "$work/forged.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
report["cases"][0]["status"] = "fail"   # a failure ...
report["passed"] = True                  # ... with "passed" edited in
json.dump(report, open(sys.argv[2], "w"))
PY
as alice scoregate evidence attach credit-risk@2 validation "$work/forged.json" || echo "(refused: exit $?)"
scoregate check credit-risk@2 || echo "(still missing: exit $?)"

step "6. Alice validates v2: edge cases, refusals, deeper checks and parity against a separate process"
as alice scoregate validate credit-risk@2 --mark-validated -o "$reports/validation"

step "7. Alice profiles the scoring path and load-tests it (a short run) against its 300 ms budget"
as alice scoregate profile credit-risk@2 --requests 100 -o "$reports/profile" | tail -n 4
as alice scoregate loadtest credit-risk@2 --rps 40 --users 4 --duration 5s -o "$reports/loadtest" | tail -n 6

step "8. Four eyes: Alice may not approve her own model; Victor can"
as alice scoregate approve credit-risk@2 --reason "mine" || echo "(refused: exit $?)"
as victor scoregate approve credit-risk@2 --reason "validation and load test reviewed"
scoregate check credit-risk@2

step "9. Alice (deployer) promotes v2 to production; the decisions are on record"
as alice scoregate alias set credit-risk@2 production --reason "go live"
scoregate decisions credit-risk@2
scoregate alias history credit-risk production

step "10. Serve it over HTTP (plain JSON and Open Inference Protocol V2)"
port=$(python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
scoregate serve --port "$port" --log-level warning &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 120); do curl -sf "http://127.0.0.1:$port/v2/health/ready" >/dev/null && break; sleep 0.5; done
body=$(python -c "import json; print(json.dumps({'rows': json.load(open('$work/rows.json'))[:2]}))")
curl -s -H 'content-type: application/json' -H 'x-request-id: demo-request-1' \
    -d "$body" "http://127.0.0.1:$port/models/credit-risk@production/predict" | python -m json.tool
curl -s "http://127.0.0.1:$port/models/credit-risk@production/predict" -H 'content-type: application/json' \
    -d '{"rows": [{"income": "lots"}]}' | python -m json.tool
curl -s "http://127.0.0.1:$port/metrics" | grep -E '^scoregate_requests_total' || true
# Then the applicants change: 40 requests of 100 rows whose incomes are 80% higher than in training.
python - "$port" "$here" <<'PY'
import sys, httpx
sys.path.insert(0, sys.argv[2])
from train import make_applicants
frame = make_applicants(4_000, seed=21).drop(columns="default")
frame["income"] = frame["income"] * 1.8
rows = frame.to_dict(orient="records")
with httpx.Client(base_url=f"http://127.0.0.1:{sys.argv[1]}", timeout=30) as client:
    for i in range(40):
        r = client.post("/models/credit-risk@production/predict", json={"rows": rows[i * 100 : (i + 1) * 100]},
                        headers={"x-request-id": f"drift-{i}"})
        r.raise_for_status()
print(f"served {len(rows):,} drifted rows in 40 requests")
PY
kill -TERM $server; wait $server 2>/dev/null || true
trap - EXIT

step "11. Reproduce the served decision exactly, from the prediction log"
scoregate reproduce demo-request-1

step "12. Monitoring: the drift in served traffic is found, an alert fires, labels land, the report"
as alice scoregate monitor drift credit-risk@production --from-log --since 1h | tail -n 8
# the high tier fires after two drifted observations in a row (a scheduler runs this; here, twice)
as alice scoregate monitor drift credit-risk@production --from-log --since 1h | tail -n 3
scoregate monitor status credit-risk@production
scoregate predictions credit-risk@production --format csv --limit 100000 --output "$work/served.csv"
python - "$work/served.csv" "$work/labels.csv" <<'PY'
import json, sys
import numpy as np, pandas as pd
served = pd.read_csv(sys.argv[1])
proba = served["outputs"].map(lambda o: json.loads(o)["proba_1"])
rng = np.random.default_rng(5)  # outcomes months later: defaults drawn from the model's own odds
labels = pd.DataFrame({"request_id": served["request_id"], "row": served["row"],
                       "defaulted": (rng.random(len(served)) < proba).astype(int)})
labels.to_csv(sys.argv[2], index=False)
print(f"{len(labels):,} outcomes observed")
PY
as alice scoregate labels ingest credit-risk "$work/labels.csv" --id request_id --row row --label defaulted
as alice scoregate monitor performance credit-risk@production | tail -n 8
scoregate monitor report credit-risk@production -o "$reports/monitoring"

step "13. Score a file of 200,000 applicants in batch: every core, a chunk at a time, resumable, on record"
python - "$here" "$work/applicants.parquet" <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
from train import make_applicants
frame = make_applicants(200_000, seed=11).drop(columns="default")
frame.insert(0, "application_id", range(len(frame)))
frame.to_parquet(sys.argv[2], index=False, row_group_size=50_000)
PY
as alice scoregate batch credit-risk@production "$work/applicants.parquet" "$work/scored" \
    --keep application_id --chunk-rows 50000 --max-reject-rate 0.05 | tee "$work/batch.txt"
job=$(grep -o 'b[0-9]\{14\}-[0-9a-f]\{6\}' "$work/batch.txt" | head -n1)
scoregate batch show "$job"
scoregate batch verify "$job"
python -c "import pyarrow.parquet as pq; t = pq.read_table('$work/scored'); print(t.num_rows, 'rows scored:', t.column_names)"

step "14. Audit: every change above is in a hash chain; the model card is generated from the records"
scoregate audit log --limit 8
scoregate audit verify
scoregate card credit-risk@2 --format html -o "$reports/model-card.html"
scoregate inventory

step "15. Containers (when podman or docker works here): build the image offline, test it, render Kubernetes"
# asks the engine (`info`), not the PATH: a docker client without a running daemon cannot build
if engine=$(bash "$here/container_engine.sh"); then
    # Users build on python:3.11-slim; machines that cannot pull use the base .ci/containers.sh made.
    base=python:3.11-slim
    if [ "$engine" = podman ] && podman image exists scoregate-test-base:bookworm; then
        base=scoregate-test-base:bookworm
    fi
    as alice scoregate image build credit-risk@2 --base "$base" --engine "$engine"
    as alice scoregate image test credit-risk@2 --output "$reports/image-test.json" --engine "$engine"
    scoregate k8s render credit-risk@2 --check -o "$reports/k8s.yaml"
    echo "deploy beside the old version: examples/credit_risk/image.sh"
else
    echo "(container step skipped: $engine)"
fi

step "16. The web UI: inventory, versions, evidence, decisions, audit and drift, for validators and auditors"
uiport=$(python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
scoregate ui --port "$uiport" &
ui=$!
trap 'kill $ui 2>/dev/null || true' EXIT
for _ in $(seq 120); do curl -sf -o /dev/null "http://127.0.0.1:$uiport/ui/login" && break; sleep 0.5; done
echo "sign in at http://127.0.0.1:$uiport/ui/ with a token, e.g. victor's: ${tokens[victor]}"
curl -s -o /dev/null -w "GET /ui/ without a session: %{http_code} -> %{redirect_url}\n" "http://127.0.0.1:$uiport/ui/"
# DEMO_UI_SECONDS=600 make demo keeps it up for ten minutes to look around
sleep "${DEMO_UI_SECONDS:-0}"
kill -TERM $ui; wait $ui 2>/dev/null || true
trap - EXIT

step "Reports"
ls "$reports" "$reports/validation"
echo "open $reports/validation/report.html, $reports/loadtest/report.html and $reports/model-card.html"
