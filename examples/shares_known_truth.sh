#!/usr/bin/env bash
# Class shares on a sample with KNOWN truth (synthetic data).
#
# Trains LipNet-4 on a synthetic encapsulation set with the thesis' class prior
# (full ~97 %, uncertain ~2 %, empty ~0.7 %), then predicts a separate synthetic "sample"
# whose class shares are known and differ from that prior (default full 80 / uncertain 10 /
# empty 10) and prints: class | true share | raw share [95% CI] | adjusted share [95% CI].
# Raw = classify-and-count; adjusted = classify-and-count corrected with the model's cross-validated
# confusion matrix (see docs/deployment.md).
#
# Usage (from the repo root):  bash examples/shares_known_truth.sh [WORK_DIR]
#   WORK_DIR     where T/, M/, S/ and S_pred.csv go (default: a new folder under /tmp);
#                steps whose output already exists there are reused, not redone.
# Environment:
#   LIPOCLASS_VENV_BIN  folder holding the lipoclass and python executables (default .venv/bin)
#   N_TRAIN (6000) SEED_TRAIN (1) EPOCHS (10) N_SAMPLE (3000) SEED_SAMPLE (7)
#   RATIOS ('full=0.8,uncertain=0.1,empty=0.1')  WORKERS (synth processes, default all)
set -euo pipefail

VENV_BIN=${LIPOCLASS_VENV_BIN:-.venv/bin}
VENV_BIN=$(cd "$VENV_BIN" && pwd)  # absolute: we cd into the work dir below
LIPOCLASS="$VENV_BIN/lipoclass"
PYTHON="$VENV_BIN/python"
N_TRAIN=${N_TRAIN:-6000}
SEED_TRAIN=${SEED_TRAIN:-1}
EPOCHS=${EPOCHS:-10}
N_SAMPLE=${N_SAMPLE:-3000}
SEED_SAMPLE=${SEED_SAMPLE:-7}
RATIOS=${RATIOS:-full=0.8,uncertain=0.1,empty=0.1}
WORKERS_ARGS=()
if [[ -n "${WORKERS:-}" ]]; then WORKERS_ARGS=(--workers "$WORKERS"); fi

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
step synth_train T "$LIPOCLASS" synth encapsulation T --n "$N_TRAIN" --seed "$SEED_TRAIN" "${WORKERS_ARGS[@]}"
step train M "$LIPOCLASS" train T --model lipnet4 --epochs "$EPOCHS" --seed 0 --out M
step synth_sample S "$LIPOCLASS" synth encapsulation S --n "$N_SAMPLE" --seed "$SEED_SAMPLE" \
    --ratios "$RATIOS" "${WORKERS_ARGS[@]}"
pool_sample
step predict S_pred.csv "$LIPOCLASS" predict M S --out S_pred.csv
echo "total wall time of this run: $((SECONDS - T_START)) s" >&2

# Markdown table: truth from the sample's own particles.csv, estimates from shares.csv
"$PYTHON" - S/particles.csv shares.csv M/model.json <<'PY'
import csv, json, sys
from collections import Counter

parts, shares, model = sys.argv[1:4]
with open(parts, newline="") as fh:
    labels = Counter(r["label"] for r in csv.DictReader(fh))
n_true = sum(labels.values())
with open(shares, newline="") as fh:
    rows = [r for r in csv.DictReader(fh) if r["sample"] == "S"]
info = json.load(open(model))
pct = lambda v: f"{100 * float(v):.1f}"
print(f"sample S: {n_true} particles, {rows[0]['n']} predicted; model {info['model']}, "
      f"classes {', '.join(info['classes'])}")
print()
print("| class | true share | raw share [95% CI] | adjusted share [95% CI] |")
print("|---|---:|---:|---:|")
err_raw = err_adj = 0.0
for r in rows:
    t = labels.get(r["class"], 0) / n_true
    err_raw += abs(float(r["raw_share"]) - t)
    err_adj += abs(float(r["adjusted_share"]) - t)
    print(f"| {r['class']} | {pct(t)} % | {pct(r['raw_share'])} % [{pct(r['raw_lo'])}, "
          f"{pct(r['raw_hi'])}] | {pct(r['adjusted_share'])} % [{pct(r['adjusted_lo'])}, "
          f"{pct(r['adjusted_hi'])}] |")
print()
print(f"sum of absolute errors: raw {100 * err_raw:.1f} points, adjusted {100 * err_adj:.1f} points")
print(f"held-out confusion matrix of the model (rows true {info['classes']}): {info['confusion']}")
PY
