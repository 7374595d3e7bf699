"""``dataset_info`` and ``lipoclass info``: counts, sizes, masks, problems, the figure."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from lipoclass.cli import main
from lipoclass.data import load_dataset, write_image
from lipoclass.data.info import dataset_info

Factory = Callable[..., Path]


def test_counts_sizes_masks(tiny_dataset: Factory) -> None:
    root = tiny_dataset(counts=(4, 3, 2), size=(20, 30), unlabelled=1, features=True)
    ds = load_dataset(root)
    info = dataset_info(ds)
    assert info.class_counts() == {
        "unilamellar": 4, "multilamellar": 3, "uncertain": 2, "(unlabelled)": 1,
    }  # fmt: skip
    stats = info.size_stats()
    for c in ("unilamellar", "multilamellar", "uncertain"):
        w0, w1, w2, h0, h1, h2 = stats[c]
        assert 20 <= w0 <= w1 <= w2 <= 30 and 20 <= h0 <= h1 <= h2 <= 30
    # sizes come from the headers and match the decoded images
    from lipoclass.data import read_image

    assert tuple(info.sizes[0]) == read_image(ds.particles[0].image).shape
    assert info.masks_present == 10 and info.masks_missing == 0 and info.empty_masks is None
    text = info.text()
    assert "10 particles" in text
    assert re.search(r"unilamellar +4 +40.00%", text)
    assert "samples: 2" in text and "s0: 5" in text
    assert "10 present, 0 missing" in text and "not checked" in text
    assert "pixel size (nm): 10 known, 0 unknown; min 0.8" in text
    assert "feature columns: 2 (area_px, noise)" in text
    assert "problems" not in text  # not checked


def test_check_lists_problems(tiny_dataset: Factory) -> None:
    root = tiny_dataset(counts=(3, 2, 2), empty_masks=1, samples=0, pixel_size_nm=None)
    (root / "images" / "p0004.png").write_bytes(b"garbage bytes")
    write_image(root / "masks" / "p0005.png", np.full((3, 4), 255, dtype=np.uint8))
    grey = np.full((20, 20, 3), 100, dtype=np.uint8)
    write_image(root / "images" / "p0006.png", grey)
    write_image(root / "masks" / "p0006.png", np.full((20, 20), 255, dtype=np.uint8))
    info = dataset_info(load_dataset(root), check=True)
    probs = dict(info.problems)
    assert set(probs) == {"p0000", "p0004", "p0005", "p0006"}
    assert "p0000.png is empty (skipped for crop/masked, kept for surround)" in probs["p0000"]
    assert "p0004.png: unreadable image" in probs["p0004"]
    assert "mask p0005.png is 4x3 but image p0005.png is" in probs["p0005"]
    assert "colour image" in probs["p0006"]
    assert info.empty_masks == 1
    text = info.text()
    assert "problems: 4" in text and "1 empty" in text
    assert "pixel size (nm): unknown for all particles" in text
    assert "samples" not in text


def test_figure_written_atomically(tiny_dataset: Factory, tmp_path: Path) -> None:
    ds = load_dataset(tiny_dataset(counts=(3, 2, 2)))
    fig = tmp_path / "figs" / "sizes.png"
    info = dataset_info(ds, figure=fig)
    assert info.figure == fig
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in fig.parent.iterdir()] == ["sizes.png"]  # no temp left
    assert f"figure: {fig}" in info.text()


def test_cli_info(
    tiny_dataset: Factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    root = tiny_dataset(counts=(3, 2, 2))
    monkeypatch.chdir(tmp_path)
    assert main(["info", str(root)]) == 0
    out = capsys.readouterr().out
    assert "7 particles" in out and "problems: none" in out
    assert not list(tmp_path.glob("*.png"))  # outputs only where --figure says
    assert main(["info", str(root), "--figure", str(tmp_path / "f.png")]) == 0
    assert (tmp_path / "f.png").is_file()
    capsys.readouterr()
    assert main(["info", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lipoclass: error:") and "dataset folder not found" in err
    (root / "images" / "p0001.png").unlink()
    assert main(["info", str(root)]) == 2
    assert "image file images/p0001.png not found" in capsys.readouterr().err


@pytest.mark.shared
def test_info_real_vesicles(vesicle_dir: Path) -> None:
    info = dataset_info(load_dataset(vesicle_dir), check=True)
    assert info.class_counts() == {"CV": 169, "DV": 43, "DVH": 42}
    assert info.masks_present == 47 and info.masks_missing == 207
    assert info.size_stats()["CV"] == (31, 31, 31, 31, 31, 31)
    assert info.problems == [] or all("empty" in m for _, m in info.problems)
