"""Studies: TOML declarations (and presets) of many cross-validation runs, run locally or on
Ray into one folder, plus ``lipoclass demo``. See docs/studies.md."""

from lipoclass.study.config import (
    BUILD_SPEC_KEYS,
    PLOTS,
    RunSettings,
    Study,
    list_presets,
    load_study,
    resolve_spec,
    setting_keys,
)
from lipoclass.study.demo import benchmark_table, run_demo
from lipoclass.study.runner import (
    EXECUTORS,
    RunJob,
    check_study_folder,
    dataset_fingerprint,
    execute_job,
    failed_runs,
    quick_subset,
    run_key,
    run_study,
)

__all__ = [
    "BUILD_SPEC_KEYS",
    "EXECUTORS",
    "PLOTS",
    "RunJob",
    "RunSettings",
    "Study",
    "benchmark_table",
    "check_study_folder",
    "dataset_fingerprint",
    "execute_job",
    "failed_runs",
    "list_presets",
    "load_study",
    "quick_subset",
    "resolve_spec",
    "run_demo",
    "run_key",
    "run_study",
    "setting_keys",
]
