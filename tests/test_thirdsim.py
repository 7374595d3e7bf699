"""benchmarks/thirdsim.py, the third simulator (evaluation only): seeded, a labelled
micrograph of the right shape with liposomes in it, every label inside its liposome's
outline and none on the carbon film. Under a second."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from conftest import load_benchmark


def _thirdsim():
    return load_benchmark("thirdsim")


def test_seeded_labelled_micrograph() -> None:
    ts = _thirdsim()
    cfg = ts.ThirdConfig(size=256, density=0.3, carbon=1.0, crystals=5.0, gold=20.0)
    a, b = ts.render(cfg, 7), ts.render(cfg, 7)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.image.shape == a.labels.shape == (256, 256) and a.image.dtype == np.float32
    assert len(a.vesicles) >= 3 and int(a.labels.max()) == len(a.vesicles)
    yy, xx = np.mgrid[:256, :256]
    for k, v in enumerate(a.vesicles, start=1):
        mine = a.labels == k
        assert mine.any()
        reach = v["r_nm"] * 1.3 / a.pixel_nm + 1  # harmonic outlines stay within 30 %
        assert np.all(np.hypot(yy[mine] - v["cy"], xx[mine] - v["cx"]) <= reach)
    assert (a.carbon & (a.labels > 0)).mean() < 0.01
    low = ts.render(replace(cfg, dose=10.0), 7).image.mean()
    assert low < a.image.mean()
    eight = ts.render(replace(cfg, eight_bit=True), 7).image
    assert eight.min() >= 0 and eight.max() <= 255 and np.all(eight == np.rint(eight))
