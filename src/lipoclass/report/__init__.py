"""The study report: ``build_report(study_dir)`` writes one self-contained ``report.html``
(figures of thesis sections 8-9, confusion matrices, baselines, a review gallery) from the
results a study stored, without retraining."""

from lipoclass.report.html import GALLERY_PER_CLASS, RunRecord, build_report, load_runs

__all__ = ["GALLERY_PER_CLASS", "RunRecord", "build_report", "load_runs"]
