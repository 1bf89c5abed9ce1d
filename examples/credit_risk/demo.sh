#!/usr/bin/env bash
# The credit-risk story, end to end, on the embedded defaults (SQLite + a local artifact folder).
# Run it with `make demo`; it keeps everything under $SCOREGATE_HOME (default .demo/home).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export SCOREGATE_HOME=${SCOREGATE_HOME:-$PWD/.demo/home}
work=$(dirname "$SCOREGATE_HOME")/files
rm -rf "$SCOREGATE_HOME" "$work"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. Train two versions of a credit-default model on synthetic applicants"
python "$here/train.py" "$work"
auc() { python -c "import json,sys; print(json.load(open('$work/metrics.json'))[sys.argv[1]])" "$1"; }

step "2. Register them: the schema is inferred from the training data, lineage and environment recorded"
scoregate register credit-risk "$work/v1.joblib" --flavor sklearn --train-data "$work/train.parquet" \
    --target default --metric "auc=$(auc v1)" --description "Probability of default, retail loans" \
    --owner alice --risk-tier high
scoregate register credit-risk "$work/v2.joblib" --flavor sklearn --train-data "$work/train.parquet" \
    --target default --metric "auc=$(auc v2)" --parent 1 --owner alice

step "3. The inventory"
scoregate models list
scoregate models versions credit-risk
scoregate models show credit-risk@2

step "4. Aliases: v1 serves production, v2 goes to staging"
scoregate alias set credit-risk@1 production
scoregate alias set credit-risk@2 staging
scoregate alias list credit-risk

step "5. Score five applicants with each alias"
scoregate predict credit-risk@production --input "$work/rows.json"
scoregate predict credit-risk@staging --input "$work/rows.json"

step "6. Bad input is refused with the field and the rule"
python - "$work/rows.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
rows[0]["age"] = "forty"; rows[1]["purpose"] = "yacht"
json.dump(rows, open(sys.argv[1].replace("rows", "bad_rows"), "w"))
PY
scoregate predict credit-risk@staging --input "$work/bad_rows.json" || echo "(refused, exit code $?)"

step "7. Promote v2, retire v1"
scoregate alias set credit-risk@2 production
scoregate alias delete credit-risk staging
scoregate retire credit-risk@1 --reason "superseded by v2 (higher AUC)"
scoregate models versions credit-risk
