#!/usr/bin/env bash
# Class shares on a sample with KNOWN truth (synthetic data), the way a lab would do it.
#
# 'lipoclass train' cross-fits LipNet-4 on a synthetic encapsulation set at the thesis prior
# (full 97.3 % / uncertain 2.0 % / empty 0.65 %: 2,500 particles hold about 50 uncertain and
# 25 empty ones), i.e. on imbalanced data as a lab annotates it. The model folder holds the
# class-share quantifiers fitted on its out-of-fold posteriors and the method chosen for THIS
# model by simulating prior shift on its own out-of-fold data (docs/deployment.md, Method
# chosen per model). Then 'predict' runs on a separate synthetic "sample" whose class shares
# are known (default full 80 / uncertain 10 / empty 10), and draws an audit of AUDIT particles
# (--audit-draw); the audit is "labelled" here from the sample's true labels (a person would
# label it on the review page) and 'predict --audit' adds the audit-corrected shares
# (prediction-powered inference). This prints: class | true share | CC | recommended (or "not
# determinable" with the reason) | audit-corrected | labels only, and the errors.
#
# '--group-by sample' (folds by micrograph): the imaging conditions are drawn per synthetic
# micrograph, so grouped folds make the out-of-fold predictions those of unseen micrographs,
# as in deployment. Three folds give every training particle an out-of-fold posterior at about
# half the cost of five. The training set, epochs and folds are those of the imbalanced
# trainings of benchmarks/bench_shares.py (docs/deployment.md, Benchmark).
#
# Usage (from the repo root):  bash examples/shares_known_truth.sh [WORK_DIR]
#   WORK_DIR     where T/, M/, S/ and S_pred*.csv go (default: a new folder under /tmp);
#                steps whose output already exists there are reused, not redone.
# Environment:
#   LIPOCLASS_VENV_BIN  folder holding the lipoclass and python executables (default .venv/bin)
#   N_TRAIN (2500) SEED_TRAIN (1) RATIOS_TRAIN ('': the thesis prior) EPOCHS (10) FOLDS (3)
#   N_SAMPLE (2000) SEED_SAMPLE (7) RATIOS ('full=0.8,uncertain=0.1,empty=0.1') AUDIT (200)
#   WORKERS (synth processes, default all)
# Takes about 5-8 minutes on a shared 2-core CPU (docs/deployment.md gives a measured run).
set -euo pipefail

VENV_BIN=${LIPOCLASS_VENV_BIN:-.venv/bin}
VENV_BIN=$(cd "$VENV_BIN" && pwd)  # absolute: we cd into the work dir below
LIPOCLASS="$VENV_BIN/lipoclass"
PYTHON="$VENV_BIN/python"
N_TRAIN=${N_TRAIN:-2500}
SEED_TRAIN=${SEED_TRAIN:-1}
RATIOS_TRAIN=${RATIOS_TRAIN:-}
EPOCHS=${EPOCHS:-10}
FOLDS=${FOLDS:-3}
N_SAMPLE=${N_SAMPLE:-2000}
AUDIT=${AUDIT:-200}
SEED_SAMPLE=${SEED_SAMPLE:-7}
RATIOS=${RATIOS:-full=0.8,uncertain=0.1,empty=0.1}
WORKERS_ARGS=()
if [[ -n "${WORKERS:-}" ]]; then WORKERS_ARGS=(--workers "$WORKERS"); fi
RATIOS_TRAIN_ARGS=()
if [[ -n "$RATIOS_TRAIN" ]]; then RATIOS_TRAIN_ARGS=(--ratios "$RATIOS_TRAIN"); fi

WORK=${1:-$(mktemp -d /tmp/lipoclass-shares.XXXXXX)}
mkdir -p "$WORK"
cd "$WORK"
echo "work dir: $WORK" >&2

step() {  # step NAME OUTPUT CMD...: run CMD unless OUTPUT exists; print its wall time
    local name=$1 output=$2
    shift 2
    if [[ -e "$output" ]]; then
        echo "[$name] $output exists: reused" >&2
        return
    fi
    local t0=$SECONDS
    "$@" >"$name.log" 2>&1 || { echo "[$name] failed, see $WORK/$name.log" >&2; tail -5 "$name.log" >&2; exit 1; }
    echo "[$name] $((SECONDS - t0)) s" >&2
}

pool_sample() {  # the synthetic micrographs of S form ONE sample: one share estimate for it
    # (each particle keeps its 'micrograph', so the interval redraws S's micrographs)
    "$PYTHON" - S/particles.csv <<'PY'
import csv, os, sys
path = sys.argv[1]
with open(path, newline="") as fh:
    rows = list(csv.DictReader(fh))
fields = list(rows[0])
if "sample" not in fields:
    fields.append("sample")
tmp = path + ".tmp"
with open(tmp, "w", newline="") as fh:
    w = csv.DictWriter(fh, fieldnames=fields)
    w.writeheader()
    for r in rows:
        r["sample"] = "S"
        w.writerow(r)
os.replace(tmp, path)
PY
}

T_START=$SECONDS
step synth_train T "$LIPOCLASS" synth encapsulation T --n "$N_TRAIN" --seed "$SEED_TRAIN" \
    "${RATIOS_TRAIN_ARGS[@]}" "${WORKERS_ARGS[@]}"
step train M "$LIPOCLASS" train T --model lipnet4 --epochs "$EPOCHS" --folds "$FOLDS" \
    --group-by sample --seed 0 --out M
step synth_sample S "$LIPOCLASS" synth encapsulation S --n "$N_SAMPLE" --seed "$SEED_SAMPLE" \
    --ratios "$RATIOS" "${WORKERS_ARGS[@]}"
pool_sample
step predict S_pred.csv "$LIPOCLASS" predict M S --out S_pred.csv --audit-draw "$AUDIT"
# the person's labels of the audit, here from the sample's true labels
"$PYTHON" - S/particles.csv S_pred_audit.csv S_labels.csv <<'PY'
import csv, sys
parts, sheet, out = sys.argv[1:4]
truth = {r["id"]: r["label"] for r in csv.DictReader(open(parts, newline=""))}
rows = list(csv.DictReader(open(sheet, newline="")))
with open(out, "w", newline="") as fh:
    w = csv.writer(fh)
    w.writerow(["id", "label"])
    w.writerows([[r["id"], truth[r["id"]]] for r in rows])
PY
step predict_audit S_audit_pred.csv "$LIPOCLASS" predict M S --out S_audit_pred.csv \
    --audit S_labels.csv
echo "total wall time of this run: $((SECONDS - T_START)) s" >&2
grep -h "^method:" predict.log >&2 || true

# Markdown table: truth from the sample's own particles.csv, estimates from the shares CSVs
"$PYTHON" - S/particles.csv S_audit_pred_shares.csv M/model.json <<'PY'
import csv, json, sys
from collections import Counter

parts, shares, model = sys.argv[1:4]
with open(parts, newline="") as fh:
    labels = Counter(r["label"] for r in csv.DictReader(fh))
n_true = sum(labels.values())
with open(shares, newline="") as fh:
    rows = [r for r in csv.DictReader(fh) if r["sample"] == "S"]
info = json.load(open(model))
rec = rows[0]["recommended"]
sel = info["quantifiers"].get("selection") or {}
pct = lambda v: f"{100 * float(v):.1f}"
cell = lambda r, m: (f"{pct(r[m])} % [{pct(r[m + '_lo'])}, {pct(r[m + '_hi'])}]"
                     if r[m] != "" else "interval wider than 25 points")
print(f"sample S: {n_true} particles, {rows[0]['n']} predicted, {rows[0]['excluded']} "
      f"excluded; model {info['model']} ({len(info['members'])} fold models), out-of-fold "
      f"counts {sel.get('class_counts')}; method chosen for this model: {rec.upper()} "
      f"({sel.get('reason', '')}); the interval redraws {rows[0].get('resampling', '?')} "
      f"({rows[0].get('micrographs', '?')} micrographs); audit: {rows[0]['audit_n']} labels")
print()
print(f"| class | true share | CC [95% CI] | {rec.upper()} (recommended) | audit-corrected "
      "[95% CI] (ESS) | labels only [95% CI] |")
print("|---|---:|---:|---:|---:|---:|")
err = {"cc": 0.0, "rec": 0.0, "audit": 0.0, "labels_only": 0.0}
inside = {"rec": True, "audit": True}
num = lambda v: float(v) if v != "" else float("nan")  # empty: interval wider than 25 points
for r in rows:
    t = labels.get(r["class"], 0) / n_true
    err["cc"] += abs(num(r["cc"]) - t)
    err["rec"] += abs(num(r["share"]) - t)
    err["audit"] += abs(num(r["audit"]) - t)
    err["labels_only"] += abs(num(r["labels_only"]) - t)
    if r["determinable"] == "yes":
        inside["rec"] &= float(r["share_lo"]) <= t <= float(r["share_hi"])
    inside["audit"] &= float(r["audit_lo"]) <= t <= float(r["audit_hi"])
    recc = cell(r, "share") if r["determinable"] == "yes" else "not determinable"
    print(f"| {r['class']} | {pct(t)} % | {cell(r, 'cc')} | {recc} | {cell(r, 'audit')} "
          f"({float(r['audit_ess']):.0f}) | {cell(r, 'labels_only')} |")
print()
for r in rows:
    if r["determinable"] == "no":
        print(f"- {r['reason']}")
pts = lambda v: "n/a (a share not reported)" if v != v else f"{100 * v:.1f}"
print(f"sum of absolute errors (points): CC {pts(err['cc'])}, {rec.upper()} (reported) "
      f"{pts(err['rec'])}, audit-corrected {pts(err['audit'])}, labels only "
      f"{pts(err['labels_only'])}")
print(f"every true share inside its reported (determinable) {rec.upper()} interval: "
      f"{'yes' if inside['rec'] else 'NO'}; inside its audit-corrected interval: "
      f"{'yes' if inside['audit'] else 'NO'}")
PY
