"""Every allowed-value list of the toolkit, defined once (standard library only, so the CLI
imports it without pulling in torch or scikit-learn).

Library modules and the CLI import these tuples; the first entry is not necessarily the
default (see each option's help)."""

from __future__ import annotations

__all__ = [
    "AUGMENTS",
    "BALANCES_CNN",
    "BALANCES_SVM",
    "CANDIDATE_FINDERS",
    "COMPUTED_FEATURE_SETS",
    "DEFAULT_RECIPE",
    "DETECT_TRAIN_BLANKS",
    "DETECT_TRAIN_ENSEMBLE",
    "DETECT_TRAIN_LABELS",
    "DETECT_TRAIN_PRIOR_SHIFT",
    "DETECT_TRAIN_THRESHOLDS",
    "DEVICES",
    "EXECUTORS",
    "EXPORT_FORMATS",
    "FEATURE_SETS",
    "INFERENCE_PRECISIONS",
    "INPUT_MODES",
    "MODES",
    "OPTIMIZERS",
    "PRECISIONS",
    "RECIPES",
    "REVIEW_QUEUES",
    "RING_NOISE",
    "RING_PROFILES",
    "RING_THRESHOLD",
    "SCHEDULES",
    "SEED_MAX",
    "VAL_METRICS",
    "VERIFIER_LABELS",
    "VERIFIER_MODELS",
]

#: training-time image augmentations of the CNNs
AUGMENTS: tuple[str, ...] = ("rotate", "shift", "flip", "shear", "zoom")
#: class-imbalance handling of a CNN
BALANCES_CNN: tuple[str, ...] = ("none", "oversample", "undersample", "smote", "weights", "focal")
#: class-imbalance handling of the SVM
BALANCES_SVM: tuple[str, ...] = ("weights", "none", "oversample", "undersample", "smote")
#: feature sets computed from the images ('lipoclass features')
COMPUTED_FEATURE_SETS: tuple[str, ...] = ("vironova", "all")
#: what the SVM may use: a computed set, or the numeric columns of particles.csv
FEATURE_SETS: tuple[str, ...] = (*COMPUTED_FEATURE_SETS, "precomputed")
#: concrete input preparations of a particle for a CNN
MODES: tuple[str, ...] = ("surround", "crop", "masked")
#: what a user may ask for: a concrete mode, or ``auto``
INPUT_MODES: tuple[str, ...] = ("auto", *MODES)
OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")
#: learning-rate schedules of CNN training
SCHEDULES: tuple[str, ...] = ("cosine", "none", "step")
#: the score that picks a model: the CNN's best epoch (early stopping) and the SVM's C/gamma
#: (names as in ``lipoclass.metrics.SUMMARY_METRICS``)
VAL_METRICS: tuple[str, ...] = ("balanced_accuracy", "macro_f1")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
#: numeric precision of CNN training (auto: bf16 where the hardware computes it natively)
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
#: number format of CPU inference in ``predict`` (fp32: what the evaluation saw)
INFERENCE_PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
#: how 'cv' / 'train' configure a model: fixed = the --model options as given; auto = the
#: dataset's fingerprint -> planned candidates compared on the same folds (lipoclass.recipe)
RECIPES: tuple[str, ...] = ("fixed", "auto")
#: the recipe of 'cv' / 'train' when neither --recipe nor a model option (--model, --size,
#: ...) is given (docs/cnn.md, Self-configuring recipe: why auto is the default)
DEFAULT_RECIPE = "auto"
#: where independent tasks (folds, study runs) run
EXECUTORS: tuple[str, ...] = ("local", "ray")
#: what 'lipoclass export' writes: an ONNX file or a bioimage.io model package (zip)
EXPORT_FORMATS: tuple[str, ...] = ("onnx", "bioimageio")
#: review queues of 'lipoclass review', in the order the page offers them (docs/review.md)
REVIEW_QUEUES: tuple[str, ...] = ("uncertain", "audit", "label-issues")
#: random seeds are 0 .. SEED_MAX (numpy's SeedSequence accepts more, torch and the
#: legacy generators do not)
SEED_MAX = 2**32 - 1

#: models of the detector's liposome verifier (lipoclass detect-train --model)
VERIFIER_MODELS: tuple[str, ...] = ("mlp", "logistic")
#: how a verifier's training candidates are labelled against the annotated liposomes
#: (``verify.candidate_truth``): "painted" all candidates' outlines painted together, a
#: candidate positive where its painted region matches an annotated liposome at mask IoU >=
#: 0.5 (a true one loses pixels to an overlapping candidate and may become negative);
#: "alone" each candidate's outline on its own, per annotated liposome only the best
#: matching candidate (IoU >= 0.5) positive (near-duplicate rings negative)
VERIFIER_LABELS: tuple[str, ...] = ("painted", "alone")
#: labelling rule of detect-train (--labels-rule; ``VERIFIER_LABELS``): "alone", as it raised
#: the check F1 of 8-micrograph labs' verifiers (altsim 0.8340 -> 0.8596, thirdsim 0.6099 ->
#: 0.6330, mean of network seeds 0-2; docs/micrographs.md, "Eighteenth round")
DETECT_TRAIN_LABELS = "alone"
#: networks of a verifier fitted by lipoclass detect-train (--ensemble; logits averaged, stored
#: as one network; at least 1, more only with the mlp: ``verify.check_ensemble``): 5 networks
#: beat 1 at detection level on altsim micrographs as a lab's (8 and 24 annotated ones, three
#: network seeds) and varied less between seeds (docs/micrographs.md, "A lab's own verifier")
DETECT_TRAIN_ENSEMBLE = 5
#: whether detect-train's verifier shifts its scores per micrograph (--prior-shift /
#: --no-prior-shift; ``verify.PRIOR_SHIFT``): off, as the shift raised precision but lost
#: as much recall or more there (same measurement)
DETECT_TRAIN_PRIOR_SHIFT = False
#: noise-only micrographs detect-train adds as negatives (--blanks; ``verify.blank_micrographs``
#: at the lab's pixel sizes; 0: none): 128, as the default verifier's training, took the
#: blank micrographs with a detection from 84 / 83 of 96 to 0 / 1 for a lab's verifier (8 / 24
#: altsim micrographs, docs/micrographs.md, "A lab's own verifier")
DETECT_TRAIN_BLANKS = 128
#: candidate thresholds (ring significance) that detect-train --threshold auto chooses from,
#: by the out-of-fold detection F1 on the lab's own annotations (the first wins a tie); not
#: detect-train's default: on two simulated 8-micrograph labs it chose 3.5 and lost check F1
#: against 4 (docs/micrographs.md, "Choosing the candidate threshold from the lab's
#: annotations")
DETECT_TRAIN_THRESHOLDS: tuple[float, ...] = (4.0, 3.5, 3.0)

#: default ring significance (robust z) of a detector candidate (lipoclass detect --threshold);
#: the verifier rejects the extra false candidates a low threshold lets in
RING_THRESHOLD = 4.0
#: robust z at which the ring map is clipped before the ring filter bank (DetectConfig.ring_clip;
#: nineteenth round, docs/micrographs.md): a gold particle, ice crystal or film edge is tens
#: of z deep and, unclipped, dominates every ring response near it and the per-radius noise
#: scale (the MAD) with it, so true rings elsewhere fall under the threshold and the clutter's
#: own rings win the suppression. A membrane is a few z; noise exceeds 4 z in 6e-5 of pixels.
RING_CLIP = 4.0
#: where each ring radius' response gets its noise scale (median / MAD; DetectConfig.ring_noise,
#: twenty-first round): "all" the whole micrograph; "unsaturated" only the positions whose
#: ring stays clear of every pixel the clip saturated; "solid" clear of solid saturated
#: regions only (gold, ice, a film's edge zone: the saturated pixels opened by a 5 x 5
#: square, so thin saturated lines, membranes, do not count)
RING_NOISE: tuple[str, ...] = ("all", "unsaturated", "solid")
#: candidate finders of the detector (DetectConfig.finder): "ring" the ring filter bank and
#: the verifier; "ring+learned" also the learned finder's confident detections that no
#: accepted ring detection covers (twenty-second round: more liposomes found on an unseen
#: simulator, fewer of its detections right; docs/micrographs.md)
CANDIDATE_FINDERS: tuple[str, ...] = ("ring", "ring+learned")
#: cross-section of the detector's ring filter (DetectConfig.ring_profile): "gaussian" a thin
#: ring of Gaussian cross-section (sigma 0.8 px); "measured" a second pass with the mean
#: membrane cross-section measured on the micrograph's own strong candidates
RING_PROFILES: tuple[str, ...] = ("gaussian", "measured")
