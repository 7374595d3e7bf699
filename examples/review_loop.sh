#!/usr/bin/env bash
# The review loop end to end on synthetic data, with a simulated person who answers with the
# true labels: noisy training labels -> model -> label-issue queue -> review -> apply ->
# retrained model, both models compared on a labelled audit of new particles.
#   bash examples/review_loop.sh [OUT_DIR] [MODEL]      (MODEL: svm (default, fast) or lipnet4 ...)
# A real person replaces step 3 with: lipoclass review "$OUT/noisy" --model "$OUT/model-v1"
set -euo pipefail
OUT=${1:-review-loop}
MODEL=${2:-svm}
LC=${LIPOCLASS:-lipoclass}
PY=${PYTHON:-python}
rm -rf "$OUT" && mkdir -p "$OUT"

# 1. training data with 15% wrong labels (the truth is kept aside for the simulated person)
$LC synth lamellarity "$OUT/truth" --n 240 --seed 1 >/dev/null
$PY - "$OUT" <<'PY'
import csv, shutil, sys
import numpy as np
out = sys.argv[1]
shutil.copytree(f"{out}/truth", f"{out}/noisy")
rows = list(csv.DictReader(open(f"{out}/truth/particles.csv")))
classes = sorted({r["label"] for r in rows})
rng = np.random.default_rng(0)
flip = rng.choice(len(rows), size=int(0.15 * len(rows)), replace=False)
for i in flip:
    rows[i]["label"] = str(rng.choice([c for c in classes if c != rows[i]["label"]]))
with open(f"{out}/noisy/particles.csv", "w", newline="") as fh:
    w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader(); w.writerows(rows)
print(f"1. {len(flip)} of {len(rows)} training labels made wrong")
PY

# 2. train on the noisy labels; list the probably wrong labels (confident learning on oof.csv)
$LC train "$OUT/noisy" --model "$MODEL" --out "$OUT/model-v1" >/dev/null
$LC review queue "$OUT/noisy" --model "$OUT/model-v1" --queue label-issues --out "$OUT/queue.csv"

# 3. the simulated person: the true label of every particle in the queue, into reviews.csv
$PY - "$OUT" <<'PY'
import csv, sys
from lipoclass.quantify import REVIEW_COLUMNS
out = sys.argv[1]
truth = {r["id"]: r["label"] for r in csv.DictReader(open(f"{out}/truth/particles.csv"))}
queue = list(csv.DictReader(open(f"{out}/queue.csv")))
with open(f"{out}/reviews.csv", "w", newline="") as fh:
    w = csv.writer(fh, lineterminator="\n")
    w.writerow(REVIEW_COLUMNS)
    for q in queue:
        w.writerow([q["id"], q["micrograph"], "label-issues", q["label"], truth[q["id"]],
                    "simulated", "2026-01-01T00:00:00Z"])
wrong = sum(truth[q["id"]] != q["label"] for q in queue)
print(f"3. reviewed {len(queue)} flagged labels; {wrong} of them were really wrong")
PY

# 4. apply: a new dataset version (history.csv says what changed), then retrain
$LC review apply "$OUT/noisy" --reviews "$OUT/reviews.csv" --out "$OUT/noisy-v2"
$LC train "$OUT/noisy-v2" --model "$MODEL" --out "$OUT/model-v2" >/dev/null

# 5. before / after on an audit: new particles (another seed) with their true labels
$LC synth lamellarity "$OUT/new" --n 300 --seed 2 >/dev/null
$LC predict "$OUT/model-v1" "$OUT/new" --out "$OUT/before.csv" >/dev/null
$LC predict "$OUT/model-v2" "$OUT/new" --out "$OUT/after.csv" >/dev/null
$PY - "$OUT" <<'PY'
import csv, sys
from lipoclass.quantify import draw_audit
out = sys.argv[1]
truth = {r["id"]: (r["label"], r.get("micrograph", "")) for r in csv.DictReader(open(f"{out}/new/particles.csv"))}
ids = sorted(truth)
audit = draw_audit(ids, [truth[i][1] for i in ids], 150, seed=0)
for name in ("before", "after"):
    pred = {r["id"]: r["pred"] for r in csv.DictReader(open(f"{out}/{name}.csv"))}
    acc = sum(pred[i] == truth[i][0] for i in audit) / len(audit)
    print(f"5. {name:6s} review: accuracy {acc:.3f} on an audit of {len(audit)} new particles")
PY
