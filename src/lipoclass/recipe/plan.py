"""``plan_recipe``: a dataset's fingerprint -> the configuration and the candidates of
``--recipe auto``, by documented rules, each with its reason (docs/cnn.md, Self-configuring
recipe). The plan also carries the time estimate (``lipoclass.train.plan.training_seconds``
through the kinds' time plans, plus what a run and a candidate cost besides training) against
the budget: ``budget_factor`` x one cross-validation of the fixed recipe (LipNet-4, 28 px, 30
epochs), filled to at most ``margin`` of it (docs/cnn.md, Cost: estimate against the wall
clock)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from lipoclass.data import Fingerprint
from lipoclass.spec import ModelSpec, build_spec

__all__ = [
    "CANDIDATE_OVERHEAD_S",
    "COMBINERS",
    "INPUT_SIZES",
    "MAX_CNN_SEEDS",
    "MAX_SHRINK",
    "PLAN_MARGIN",
    "RESCALE_RATIO",
    "RUN_OVERHEAD_S",
    "Candidate",
    "Plan",
    "RecipeConfig",
    "Rule",
    "common_nm_per_px",
    "plan_recipe",
]

#: the input sides (px) the size rule chooses from, with the largest source side (px) each
#: is used for: a particle of up to 40 px loses little in a 28 px input (at most 1.4x
#: smaller), up to 72 px goes to 48 px (at most 1.5x), larger ones to 64 px
INPUT_SIZES: tuple[tuple[int, float], ...] = ((28, 40.0), (48, 72.0), (64, float("inf")))
#: how a stack candidate combines its bases' probabilities: logistic = a multinomial logistic
#: regression on their log-probabilities + size features, cross-fitted over the same folds;
#: mean = their plain average (nothing fitted)
COMBINERS: tuple[str, ...] = ("logistic", "mean")
#: imbalance (largest / smallest class) up to which the classes count as balanced
BALANCED_RATIO = 1.5
#: 95th / 5th percentile of the resized boxes' side from which sizes count as varying
SIZE_SPREAD = 1.25
#: largest / smallest pixel size above which every crop is resampled to one common scale;
#: up to 10 % the training augmentation's zoom (up to 1.25x,
#: ``train.strategies.build_augmentation``) already varies the scale more than the data does
RESCALE_RATIO = 1.1
#: how much coarser than box resizing the common scale may show the smallest particles (5th
#: percentile in nm, at the finest pixel size): a common field of view must hold the largest
#: particles, so the small ones get fewer pixels than their own box resized to the input
#: would give them. Measured (docs/cnn.md, rescale measurement) at 3.5-3.7x on synthetic
#: lamellarity, a common scale cost 0.10-0.11 macro-F1 (membranes become 1-2 px)
MAX_SHRINK = 2.0
#: the most seed members (trainings of one CNN configuration on the same folds with different
#: seeds, averaged) the seed rule plans: the budget binds first wherever the fixed recipe costs
#: about one planned CNN (3x one CV leaves room for 2 trainings + the SVM); the cap bounds
#: prediction (each member is its folds' networks x 8 TTA views) where the budget would allow
#: more; a deep ensemble's gain flattens by ~4-5 members (Lakshminarayanan et al. 2017)
MAX_CNN_SEEDS = 4
#: seconds one cross-validation run costs besides training its models (start, loading the
#: crops, calibration, class-share quantifiers, figures, the model folder): the fixed
#: recipe's CV and ``--recipe auto`` (there also the fingerprint and the stacks) each pay it
#: once; measured 4.8-5.5 s at 254-500 particles (docs/cnn.md, Cost: estimate against the
#: wall clock)
RUN_OVERHEAD_S = 5.0
#: seconds each model candidate costs besides its training (its calibration, out-of-fold
#: table and folder); measured 0.2-0.7 s
CANDIDATE_OVERHEAD_S = 0.5
#: the share of the budget the plan fills by its estimate: the estimate's error against the
#: measured CPU time of whole runs was -2 % to +10 % (the 64 px CNN on encapsulation up to
#: +9 % above its area scaling, load on the shared cores), so a plan filled to the budget's
#: edge ran at 2.8-3.2x one fixed CV; filled to 90 % it stays within 3x
PLAN_MARGIN = 0.9


@dataclass(frozen=True)
class RecipeConfig:
    """Knobs of the planner (the defaults are the recipe; tests shrink them).

    ``base_model``: the CNN of the plan; ``hybrid_model``: the CNN that also takes size
    features (None: never planned); ``max_epochs`` / ``min_epochs``: the epoch range the
    budget rule may use; ``budget_factor``: the candidates together may cost this many
    cross-validations of the fixed recipe; ``two_sizes``: plan a second CNN configuration;
    ``svm`` / ``stack``: include the SVM and the stack candidates; ``tta``: the CNN
    candidates predict (out of fold and later) as the mean over the 8 flips / quarter turns
    (``TrainConfig.tta``; docs/cnn.md, Self-configuring recipe); ``device``,
    ``precision``: passed to the CNNs; ``max_images``: particles the fingerprint reads;
    ``max_cnn_seeds``: the most seed members per CNN configuration the seed rule may plan
    where the budget leaves room (1: none; docs/cnn.md, Self-configuring recipe);
    ``margin``: the share of the budget the plan fills by its estimate (``PLAN_MARGIN``)."""

    base_model: str = "lipnet4"
    hybrid_model: str | None = "lipnet_hybrid"
    max_epochs: int = 30
    min_epochs: int = 10
    budget_factor: float = 3.0
    two_sizes: bool = True
    svm: bool = True
    stack: bool = True
    tta: bool = True
    device: str = "auto"
    precision: str = "auto"
    max_images: int = 2000
    max_cnn_seeds: int = MAX_CNN_SEEDS
    margin: float = PLAN_MARGIN

    def __post_init__(self) -> None:
        if not 1 <= self.min_epochs <= self.max_epochs:
            raise ValueError(
                f"need 1 <= min_epochs <= max_epochs, got {self.min_epochs}, {self.max_epochs}"
            )
        if not self.budget_factor > 0:
            raise ValueError(f"budget_factor must be positive, got {self.budget_factor}")
        if self.max_images < 1:
            raise ValueError(f"max_images must be at least 1, got {self.max_images}")
        if isinstance(self.max_cnn_seeds, bool) or not 1 <= int(self.max_cnn_seeds) <= 16:
            raise ValueError(f"max_cnn_seeds must be 1-16, got {self.max_cnn_seeds}")
        if not 0 < self.margin <= 1:
            raise ValueError(f"margin must be in (0, 1], got {self.margin}")


@dataclass(frozen=True)
class Rule:
    """One decision of the plan: ``name``, the ``value`` chosen and why."""

    name: str
    value: Any
    reason: str


@dataclass(frozen=True)
class Candidate:
    """A configuration ``--recipe auto`` cross-validates. A model candidate has a ``spec``;
    a stack candidate has a ``combiner`` (``COMBINERS``) over the model candidates named in
    ``bases``, each of its ``groups`` (names; empty: every base alone) averaged into one
    input first. ``member_of``: a seed member of that CNN candidate (the same configuration
    with another training seed; fitted and listed, never chosen alone). ``seconds``: its
    rough CPU time on 2 cores, training + ``CANDIDATE_OVERHEAD_S`` (0 for stacks)."""

    name: str
    spec: ModelSpec | None = None
    combiner: str | None = None
    bases: tuple[str, ...] = ()
    seconds: float = 0.0
    reason: str = ""
    member_of: str | None = None
    groups: tuple[tuple[str, ...], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "spec": None if self.spec is None else self.spec.to_dict(),
            "combiner": self.combiner,
            "bases": list(self.bases),
            "groups": [list(g) for g in self.groups],
            "member_of": self.member_of,
            "seconds": round(self.seconds, 1),
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Plan:
    """What ``--recipe auto`` will do: the ``rules`` applied, the ``candidates`` (models
    first, then stacks), the estimated ``seconds`` of the whole run (candidates +
    ``RUN_OVERHEAD_S``) and the fixed recipe's ``fixed_seconds`` (one CV, training +
    ``RUN_OVERHEAD_S``) it is bounded by (x ``budget_factor``, filled to ``margin``)."""

    rules: tuple[Rule, ...]
    candidates: tuple[Candidate, ...]
    seconds: float
    fixed_seconds: float
    budget_factor: float
    folds: int
    margin: float = 1.0

    def rule(self, name: str) -> Rule:
        for r in self.rules:
            if r.name == name:
                return r
        raise KeyError(name)

    @property
    def models(self) -> tuple[Candidate, ...]:
        return tuple(c for c in self.candidates if c.spec is not None)

    @property
    def stacks(self) -> tuple[Candidate, ...]:
        return tuple(c for c in self.candidates if c.spec is None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rules": [{"name": r.name, "value": r.value, "reason": r.reason} for r in self.rules],
            "candidates": [c.to_dict() for c in self.candidates],
            "seconds": round(self.seconds, 1),
            "fixed_seconds": round(self.fixed_seconds, 1),
            "budget_factor": self.budget_factor,
            "margin": self.margin,
            "folds": self.folds,
        }

    def text(self) -> str:
        """The plan as printed before training."""
        lines = ["recipe auto: plan"]
        lines += [f"  {r.name}: {r.value} ({r.reason})" for r in self.rules]
        lines.append("  candidates (same folds):")
        for c in self.candidates:
            t = f", about {_minutes(c.seconds)}" if c.spec is not None else ""
            lines.append(f"    {c.name}: {c.reason}{t}")
        lines.append(
            f"  time: about {_minutes(self.seconds)} on 2 CPU cores for {self.folds} folds of "
            f"every candidate (one cross-validation of the fixed recipe: about "
            f"{_minutes(self.fixed_seconds)}; budget {self.budget_factor:g}x, planned to at "
            f"most {self.margin:.0%} of it by this estimate)"
        )
        return "\n".join(lines)


def _minutes(seconds: float) -> str:
    return f"{max(1, round(seconds / 60))} min" if seconds >= 30 else f"{max(1, round(seconds))} s"


def _size_rule(fp: Fingerprint, mode: str, base_nm: float | None = None) -> Rule:
    """Input side from the side of what gets resized: the mask's box (masked / crop) or the
    whole crop (surround); with a common scale (``base_nm``: the coarsest pixel size) the
    particle's side in nm at that scale."""
    q = fp.crop_px if mode == "surround" else fp.particle_px
    what = "crops" if mode == "surround" else "particles"
    if q is None:
        return Rule("input size", 28, "no image measured: the designed 28 px")
    d = q.median
    if base_nm is not None and fp.particle_nm is not None:
        d = round(fp.particle_nm.median / base_nm, 3)
        what = f"particles at {base_nm:g} nm/px"
    size = next(s for s, limit in INPUT_SIZES if d <= limit)
    if size == 28:
        why = f"{what} span {d:g} px (median): a 28 px input keeps their detail"
    else:
        why = (
            f"{what} span {d:g} px (median): a 28 px input would shrink them "
            f"{d / 28:.1f}x and drop edges and texture; {size} px shrinks them at most "
            f"{max(1.0, d / size):.1f}x"
        )
    return Rule("input size", size, why)


def _cnn_spec(
    model: str,
    cfg: RecipeConfig,
    mode: str,
    size: int,
    balance: str,
    batch: int,
    epochs: int,
    nm_per_px: float | None = None,
) -> ModelSpec:
    spec = build_spec(
        model,
        mode=mode,
        size=size,
        epochs=epochs,
        batch_size=batch,
        balance=balance,
        device=cfg.device,
        precision=cfg.precision,
    ).with_config(tta=cfg.tta)
    if nm_per_px is None:
        return spec
    return replace(spec, prep=replace(spec.prep, nm_per_px=nm_per_px))


def _mode_rule(fp: Fingerprint) -> Rule:
    if fp.all_masked:
        why = "every particle has a mask: crop to it and blank the background (thesis 8.5)"
        return Rule("input mode", "masked", why)
    why = (
        f"{fp.n_particles - fp.masks} particle(s) without a mask: the whole crop (an automatic "
        "mask is a poor stand-in)"
    )
    return Rule("input mode", "surround", why)


def _rescale_base(fp: Fingerprint, mode: str) -> tuple[float | None, str]:
    """(the coarsest pixel size in nm, "") when the crops are to be put on one common scale
    (pixel sizes differ by more than ``RESCALE_RATIO``, every particle has one, and the
    scale shows the smallest particles at most ``MAX_SHRINK`` x coarser than box resizing
    would), else (None, why not)."""
    if fp.pixel_size_nm is None or fp.particle_nm is None:
        return None, "no pixel size known: each box is resized to the input (nothing to equalise)"
    _med, lo, hi = fp.pixel_size_nm
    known = fp.n_particles if fp.pixel_size_known is None else fp.pixel_size_known
    if known < fp.n_particles:
        why = (
            f"{fp.n_particles - known} particle(s) without a pixel size cannot be put on a "
            "common scale: each box is resized; the size in nm reaches the hybrid CNN and the "
            "stack where known"
        )
        return None, why
    if hi / lo <= RESCALE_RATIO:
        why = (
            f"pixel sizes within {RESCALE_RATIO:g}x ({lo:g}-{hi:g} nm/px): the training zoom "
            "(up to 1.25x) varies the scale more; each box is resized to the input"
        )
        return None, why
    size = int(_size_rule(fp, mode, hi).value)
    nm = common_nm_per_px(fp, size)
    # the smallest particles' scale with box resizing (never finer than their pixels)
    boxed = max(lo, fp.particle_nm.p5 / size)
    if nm > MAX_SHRINK * boxed:
        why = (
            f"pixel sizes differ {hi / lo:.2f}x ({lo:g}-{hi:g} nm/px), but a common scale "
            f"holding the particles ({nm:g} nm/px at {size} px) would show the smallest "
            f"{nm / boxed:.1f}x coarser than box resizing (> {MAX_SHRINK:g}x: thin membranes "
            "lost; measured worse, docs/cnn.md): each box is resized; the size in nm reaches "
            "the hybrid CNN and the stack"
        )
        return None, why
    return hi, ""


def common_nm_per_px(fp: Fingerprint, size: int) -> float:
    """The common scale (nm per input pixel) of ``size`` px inputs: the coarsest pixel size
    (every particle is shrunk or kept, none enlarged, so no detail is invented), coarser
    where needed for the 95th-percentile particle (nm) to fit the ``size`` px field."""
    if fp.pixel_size_nm is None or fp.particle_nm is None:
        raise ValueError("a common scale needs known pixel sizes")
    return float(f"{max(fp.pixel_size_nm[2], fp.particle_nm.p95 / size):.4g}")


def _rescale_rule(fp: Fingerprint, mode: str, size: int, cfg: RecipeConfig) -> Rule:
    base, why_not = _rescale_base(fp, mode)
    if base is not None and not cfg.two_sizes:
        base, why_not = None, "one CNN configuration only (two_sizes off): box resizing"
    if base is None:
        return Rule("rescale", "no", why_not)
    assert fp.pixel_size_nm is not None and fp.particle_nm is not None
    nm = common_nm_per_px(fp, size)
    lo, hi = fp.pixel_size_nm[1], fp.pixel_size_nm[2]
    why = (
        f"pixel sizes differ {hi / lo:.2f}x ({lo:g}-{hi:g} nm/px): the second CNN "
        f"configuration resamples every crop to {nm:g} nm/px (the coarsest pixel size, so "
        "nothing is enlarged"
        + (", coarser so the 95th-percentile particle fits" if nm > hi else "")
        + f") and cuts / pads it to {size} px, so the network sees the physical size; the "
        "first stays box-resized (measured better on synthetic lamellarity, docs/cnn.md): "
        "the choice on the same folds decides"
    )
    return Rule("rescale", f"{nm:g} nm/px", why)


def _balance_rule(fp: Fingerprint) -> Rule:
    if fp.imbalance > BALANCED_RATIO:
        why = (
            f"largest / smallest class {fp.imbalance:.1f}:1: rare classes shown as often as "
            "the largest (CNN, thesis 8.1); the SVM weighs them"
        )
        return Rule("balance", "oversample", why)
    return Rule("balance", "none", f"classes balanced ({fp.imbalance:.2f}:1): nothing to correct")


def _tta_rule(cfg: RecipeConfig) -> Rule:
    if not cfg.tta:
        return Rule("test-time augmentation", "no", "switched off (RecipeConfig.tta)")
    why = (
        "the CNNs train on particles rotated by up to 180 degrees and flipped, so all 8 flips / "
        "quarter turns of a particle are views they learned; averaging them steadies each "
        "prediction for 8x the (small) prediction cost, training unchanged; the out-of-fold "
        "figures are computed the same way"
    )
    return Rule("test-time augmentation", "8 flips / quarter turns (CNNs)", why)


def _batch_rule(rows: float) -> Rule:
    """Batch size from the training rows one epoch visits (per fold, after balancing)."""
    if rows < 320:
        return Rule("batch size", 16, f"~{rows:.0f} training rows per epoch: 16 per step "
                    "gives >= 20 steps")  # fmt: skip
    if rows > 50_000:
        return Rule("batch size", 64, f"~{rows:.0f} training rows per epoch: 64 per step for speed")
    return Rule("batch size", 32, f"~{rows:.0f} training rows per epoch: the designed 32")


def _sizes_vary(fp: Fingerprint, mode: str) -> bool:
    """Whether the boxes that get resized differ in size (95th / 5th percentile of their
    side >= ``SIZE_SPREAD``): only then do size features tell the particles apart."""
    q = fp.crop_px if mode == "surround" else fp.particle_px
    return q is not None and q.p5 > 0 and q.p95 / q.p5 >= SIZE_SPREAD


def _cnn_configs(
    fp: Fingerprint, cfg: RecipeConfig, mode: str, size: int, nm: float | None
) -> list[tuple[str, str, int, str, float | None]]:
    """(network, candidate name, input size, reason, common scale or None) of the planned CNN
    configurations: the planned network (the hybrid one when pixel sizes differ) at the
    planned size, box-resized; then the same network at the common scale ``nm`` when the
    rescale rule fires, else at 28 px when the planned size is larger, else the hybrid
    network when the resized boxes vary in size."""
    hybrid = cfg.hybrid_model
    first = hybrid if (fp.pixel_sizes_differ and hybrid) else cfg.base_model
    why = "the planned CNN" + (" (size features: pixel sizes differ)" if first == hybrid else "")
    out: list[tuple[str, str, int, str, float | None]] = [
        (first, f"{first}_{size}", size, why, None)
    ]
    if cfg.two_sizes and nm is not None:
        why = "the same CNN at a common scale: does the physical size in the pixels help?"
        out.append((first, f"{first}_{size}_nm", size, why, nm))
    elif cfg.two_sizes and size > 28:
        why = "the same CNN at 28 px: does the detail help?"
        out.append((first, f"{first}_28", 28, why, None))
    elif cfg.two_sizes and hybrid and first != hybrid and _sizes_vary(fp, mode):
        why = "the CNN that also sees the particle's size"
        out.append((hybrid, f"{hybrid}_{size}", size, why, None))
    return out


def _stack_candidates(
    bases: tuple[str, ...], groups: tuple[tuple[str, ...], ...] = ()
) -> list[Candidate]:
    why = (
        "logistic regression on the candidates' out-of-fold log-probabilities + size features "
        "(nm when known), cross-fitted on the same folds"
    )
    avg = "the average of their probabilities"
    if groups:
        why += " (each CNN's seed members averaged first)"
        avg += " (each CNN's seed members averaged first, so each CNN counts once)"
    return [
        Candidate("stack", combiner="logistic", bases=bases, reason=why, groups=groups),
        Candidate("mean", combiner="mean", bases=bases, reason=avg, groups=groups),
    ]


def _budget_text(cfg: RecipeConfig) -> str:
    """What the plan fills, e.g. "90% of 3x one fixed-recipe CV"."""
    return f"{cfg.margin:.0%} of {cfg.budget_factor:g}x one fixed-recipe CV"


def _seeds_rule(cfg: RecipeConfig, seeds: int, more_s: float, budget: float) -> Rule:
    """The CNN seed rule's decision: ``seeds`` trainings per CNN configuration; ``more_s``:
    the estimate with one more, ``budget``: the budget in seconds."""
    if seeds > 1:
        why = (
            f"budget left after the epoch rule: each CNN configuration is trained {seeds}x "
            "on the same folds with different seeds and its members' probabilities averaged "
            "(a deep ensemble, Lakshminarayanan et al. 2017: on a small set one training's "
            "result depends on its seed, the members' average less); the most (<= "
            f"{cfg.max_cnn_seeds}, RecipeConfig.max_cnn_seeds) that keeps the estimate within "
            f"{_budget_text(cfg)} (at the capped epochs)"
        )
        return Rule("CNN seeds", seeds, why)
    if cfg.max_cnn_seeds == 1:
        return Rule("CNN seeds", 1, "one training per CNN (RecipeConfig.max_cnn_seeds 1)")
    why = (
        f"no budget left: a second training of each CNN would bring the estimate to about "
        f"{_minutes(more_s)}, beyond {_budget_text(cfg)} (about {_minutes(budget)})"
    )
    return Rule("CNN seeds", 1, why)


def _epoch_rule(
    cfg: RecipeConfig, cost: Callable[[int, int], float], budget: float, names: Sequence[str]
) -> tuple[int, Rule]:
    """The epoch rule: the most epochs (<= max) that keep every CNN + SVM within the budget;
    below min_epochs the second CNN configuration is dropped instead. Returns the number of
    CNN configurations kept and the rule."""
    n_cnn, epochs = len(names), cfg.max_epochs
    while epochs > cfg.min_epochs and cost(n_cnn, epochs) > budget:
        epochs -= 1
    if cost(n_cnn, epochs) > budget and n_cnn > 1:
        n_cnn, epochs = 1, cfg.max_epochs
        while epochs > cfg.min_epochs and cost(1, epochs) > budget:
            epochs -= 1
    why = (
        f"the most (<= {cfg.max_epochs}, fixed: no early stopping, docs/cnn.md ablation) that "
        f"keeps {n_cnn} CNN configuration(s) + SVM within {_budget_text(cfg)}"
    )
    if cost(n_cnn, epochs) > budget:
        why = f"the minimum {cfg.min_epochs}: even one CNN exceeds the budget (estimate)"
    if n_cnn < len(names):
        why += f"; {names[1]} dropped to stay within it"
    return n_cnn, Rule("epochs", epochs, why)


def _model_seconds(spec: ModelSpec, train_counts: Sequence[np.ndarray]) -> float:
    """A model candidate's estimate: its kind's time plan (training) + what a candidate
    costs besides (``CANDIDATE_OVERHEAD_S``)."""
    return spec.kind.plan(spec, train_counts)[1] + CANDIDATE_OVERHEAD_S


def _fixed_seconds(
    fixed: ModelSpec, train_counts: Sequence[np.ndarray], epochs: int | None = None
) -> float:
    """One CV of the fixed recipe ``fixed`` (at ``epochs`` if given): its training + the
    run's own cost (``RUN_OVERHEAD_S``), the unit of the budget."""
    if epochs is not None:
        fixed = replace(fixed, config=replace(fixed.config, epochs=epochs))
    return fixed.kind.plan(fixed, train_counts)[1] + RUN_OVERHEAD_S


def plan_recipe(
    fp: Fingerprint,
    train_counts: Sequence[np.ndarray],
    config: RecipeConfig | None = None,
) -> Plan:
    """The plan for a dataset with fingerprint ``fp`` whose folds' training parts have
    per-class counts ``train_counts`` (one (C,) array per fold; they drive the estimates)."""
    from lipoclass.train.plan import epoch_rows

    cfg = config or RecipeConfig()
    mode_rule = _mode_rule(fp)
    mode = str(mode_rule.value)
    base_nm = _rescale_base(fp, mode)[0] if cfg.two_sizes else None
    size_rule = _size_rule(fp, mode, base_nm)
    size = int(size_rule.value)
    nm = None if base_nm is None else common_nm_per_px(fp, size)
    balance_rule = _balance_rule(fp)
    balance = str(balance_rule.value)
    probe = _cnn_spec(cfg.base_model, cfg, mode, size, balance, 32, cfg.max_epochs).config
    rows = float(np.mean([epoch_rows(c, probe) for c in train_counts])) if train_counts else 0.0
    batch_rule = _batch_rule(rows)
    batch = int(batch_rule.value)
    cnns = _cnn_configs(fp, cfg, mode, size, nm)

    fixed = build_spec("lipnet4", mode=mode, device=cfg.device, precision=cfg.precision)
    fixed_s = _fixed_seconds(fixed, train_counts)
    svm = build_spec("svm", mode=mode) if cfg.svm else None
    svm_s = _model_seconds(svm, train_counts) if svm is not None else 0.0
    budget = cfg.margin * cfg.budget_factor * fixed_s

    def cost(n_cnn: int, epochs: int, seeds: int = 1) -> float:
        specs = [_cnn_spec(m, cfg, mode, s, balance, batch, epochs, k) for m, _, s, _, k in cnns]
        cnn_s = sum(_model_seconds(sp, train_counts) for sp in specs[:n_cnn])
        return RUN_OVERHEAD_S + svm_s + seeds * cnn_s

    n_cnn, epoch_rule = _epoch_rule(cfg, cost, budget, [c[1] for c in cnns])
    epochs = int(epoch_rule.value)
    # the seed rule: what the budget leaves after the epochs and configurations goes to more
    # trainings of each CNN configuration on the same folds (seed members, averaged)
    # (against the fixed recipe at the capped epochs: a run capped at few epochs stays quick)
    capped = _fixed_seconds(fixed, train_counts, min(30, cfg.max_epochs))
    seed_budget = min(budget, cfg.margin * cfg.budget_factor * capped)
    seeds = 1
    while seeds < cfg.max_cnn_seeds and cost(n_cnn, epochs, seeds + 1) <= seed_budget:
        seeds += 1
    rules = (mode_rule, size_rule, _rescale_rule(fp, mode, size, cfg), balance_rule, batch_rule,
             epoch_rule,
             _seeds_rule(cfg, seeds, cost(n_cnn, epochs, seeds + 1), seed_budget),
             _tta_rule(cfg))  # fmt: skip

    cands: list[Candidate] = []
    groups: list[tuple[str, ...]] = []
    for m, name, s, reason, k in cnns[:n_cnn]:
        spec = _cnn_spec(m, cfg, mode, s, balance, batch, epochs, k)
        secs = _model_seconds(spec, train_counts)
        scale = "" if spec.prep.nm_per_px is None else f" at {spec.prep.nm_per_px:g} nm/px"
        why = f"{reason}, {s} px{scale}, {epochs} epochs"
        cands.append(Candidate(name, spec, seconds=secs, reason=why))
        for j in range(1, seeds):
            why = f"seed member {j + 1} of {name}: the same configuration and folds, another seed"
            member = spec.with_config(member_seed=j)
            cands.append(Candidate(f"{name}_seed{j}", member, seconds=secs, reason=why,
                                   member_of=name))  # fmt: skip
        groups.append((name, *(f"{name}_seed{j}" for j in range(1, seeds))))
    stacks: list[Candidate] = []
    for g in groups if seeds > 1 else []:
        why = f"the mean of {g[0]}'s {seeds} seed members (a deep ensemble)"
        stacks.append(Candidate(f"{g[0]}_x{seeds}", combiner="mean", bases=g, reason=why,
                                groups=(g,)))  # fmt: skip
    if svm is not None:
        why = "RBF-SVM on measured features (size, shape, profile)"
        cands.append(Candidate("svm", svm, seconds=svm_s, reason=why))
        groups.append(("svm",))
    if cfg.stack and svm is not None and len(groups) >= 2:
        stacks += _stack_candidates(
            tuple(c.name for c in cands), tuple(groups) if seeds > 1 else ()
        )
    cands += stacks
    return Plan(rules, tuple(cands), RUN_OVERHEAD_S + sum(c.seconds for c in cands), fixed_s,
                cfg.budget_factor, len(train_counts), cfg.margin)  # fmt: skip
