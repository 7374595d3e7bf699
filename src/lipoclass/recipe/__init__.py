"""The self-configuring recipe (``--recipe auto``; docs/cnn.md, Self-configuring recipe): a
dataset's fingerprint (``lipoclass.data.fingerprint``) -> a plan by documented rules
(``plan_recipe``) -> candidates cross-fitted on the same folds, the best by out-of-fold
macro-F1 kept as the model folder (``fit_auto``); ``nested_optimism`` measures how much that
choice flatters its own score. Above ``crossfit`` and ``evaluate``, below ``cli``."""

from lipoclass.recipe.auto import AutoResult, NestedResult, fit_auto, nested_optimism, score_table
from lipoclass.recipe.plan import (
    COMBINERS,
    INPUT_SIZES,
    Candidate,
    Plan,
    RecipeConfig,
    Rule,
    plan_recipe,
)
from lipoclass.recipe.stack import cross_fit, fit_combiner

__all__ = [
    "COMBINERS",
    "INPUT_SIZES",
    "AutoResult",
    "Candidate",
    "NestedResult",
    "Plan",
    "RecipeConfig",
    "Rule",
    "cross_fit",
    "fit_auto",
    "fit_combiner",
    "nested_optimism",
    "plan_recipe",
    "score_table",
]
