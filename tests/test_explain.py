"""explain: every figure written for a tiny model, linked from index.html; bad ids."""

from __future__ import annotations

import re

import pytest

from lipoclass.cli import main
from lipoclass.explain import explain
from test_predict import CLASSES, write_model_folder


@pytest.mark.slow
def test_explain_writes_every_figure(tmp_path, tiny_dataset):
    ds_dir = tiny_dataset(counts=(4, 3, 3))
    module = write_model_folder(tmp_path / "m")
    n_conv = sum(1 for m in module.modules() if m.__class__.__name__ == "Conv2d")
    page = explain(tmp_path / "m", ds_dir, tmp_path / "x")
    assert page == tmp_path / "x" / "index.html"
    names = sorted(p.name for p in (tmp_path / "x").iterdir())
    assert len([n for n in names if n.startswith("filters_")]) == n_conv
    assert len([n for n in names if n.startswith("activations_")]) == n_conv
    assert len([n for n in names if n.startswith("saliency_")]) == 3 * len(CLASSES)
    html = page.read_text()
    linked = set(re.findall(r"src='([^']+)'", html))
    pngs = {n for n in names if n.endswith(".png")}
    assert linked == pngs  # every figure shown, all links relative and present
    for n in pngs:
        assert (tmp_path / "x" / n).stat().st_size > 500
    # exactly one of the two: the class-average figure, or the note why it is missing
    assert ("class_average_guided_backprop.png" in pngs) != ("No correctly predicted" in html)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".x.")]  # no staging left


@pytest.mark.slow
def test_explain_chosen_ids_and_rerun(tmp_path, tiny_dataset, capsys):
    ds_dir = tiny_dataset(counts=(4, 3, 3))
    write_model_folder(tmp_path / "m")
    args = ["explain", str(tmp_path / "m"), str(ds_dir), "--out", str(tmp_path / "x")]
    assert main([*args, "--ids", "p0001,p0005"]) == 0
    assert len(list((tmp_path / "x").glob("saliency_*.png"))) == 2
    assert main([*args, "--ids", "p0001"]) == 0  # replaces the earlier page
    assert len(list((tmp_path / "x").glob("saliency_*.png"))) == 1
    capsys.readouterr()
    assert main([*args, "--ids", "p0001,nope"]) == 2
    err = capsys.readouterr().err
    assert "particle 'nope' is not in" in err and err.count("\n") == 1
    assert len(list((tmp_path / "x").glob("saliency_*.png"))) == 1  # untouched
