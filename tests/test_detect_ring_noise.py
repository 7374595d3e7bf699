"""Where the ring responses get their noise scale (``DetectConfig.ring_noise``, twenty-first
round): "solid" and "unsaturated" measure each radius' median / MAD away from what the clip
saturated, so dense clutter (gold, ice) no longer inflates the scale every ring is judged by."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from lipoclass.choices import RING_NOISE
from lipoclass.micrograph import detect as D
from lipoclass.micrograph.detect import DetectConfig, detect_candidates

RINGS = [(40, 150), (100, 160), (160, 145)]


def _cfg(noise: str = "all") -> DetectConfig:
    return DetectConfig(min_diameter=40.0, max_diameter=120.0, unit="px", verifier="none",
                        ring_noise=noise)  # fmt: skip


def _ring_map(seed: int = 0) -> np.ndarray:
    """A clipped ring map (robust z): unit noise, three thin rings of radius 12 px a few z
    deep on the right, and on the left 40 % of the map saturated solid clutter (blocks of
    8 x 8 px at +-4 z, random signs: gold, frost)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:200, :200].astype(np.float64)
    z = rng.normal(0.0, 1.0, (200, 200))
    for cy, cx in RINGS:
        z += 3.0 * np.exp(-0.5 * ((np.hypot(yy - cy, xx - cx) - 12.0) / 0.8) ** 2)
    signs = np.kron(rng.choice([-4.0, 4.0], (25, 10)), np.ones((8, 8)))
    z[:, :80] = signs
    return np.clip(z, -4.0, 4.0).astype(np.float32)


def test_clutter_no_longer_sets_the_noise_scale() -> None:
    z = _ring_map()
    radii = [11.0, 12.0, 13.0]
    best = {n: D._ring_octave(z, 1, radii, 1, None, (n, 4.0))[0] for n in RING_NOISE}
    at = {n: np.array([b[cy - 1 : cy + 2, cx - 1 : cx + 2].max() for cy, cx in RINGS])
          for n, b in best.items()}  # fmt: skip
    # the clutter's ring responses widen the whole map's MAD: measured away from it, every
    # true ring stands out further
    assert np.all(at["solid"] > 1.3 * at["all"])
    assert np.all(at["unsaturated"] >= at["solid"])  # it leaves out every saturated pixel
    # noise-only positions right of the clutter keep a unit scale
    clear = best["solid"][20:180, 110:130]
    assert 0.0 < np.median(clear) < 3.0


def test_without_solid_saturated_regions_the_rule_changes_nothing() -> None:
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:320, :320].astype(np.float64)
    image = 100.0 - rng.normal(0.0, 0.3, (320, 320))
    for cy, cx in [(80, 240), (170, 250), (260, 235), (150, 80)]:
        image -= 0.6 * np.exp(-0.5 * ((np.hypot(yy - cy, xx - cx) - 25.0) / 2.0) ** 2)
    det = {n: detect_candidates(image, _cfg(n), verifier=False) for n in ("all", "solid")}
    np.testing.assert_array_equal(det["all"].significance, det["solid"].significance)
    np.testing.assert_array_equal(det["all"].labels, det["solid"].labels)


def test_thin_saturated_lines_are_not_solid() -> None:
    zd = np.zeros((60, 60), np.float32)
    zd[30, :] = 4.0  # a thin saturated line (a membrane)
    assert D._clear_distance(zd, ("solid", 4.0)) is None
    assert D._clear_distance(zd, ("all", 4.0)) is None
    line = D._clear_distance(zd, ("unsaturated", 4.0))
    assert line is not None and line.shape == (20, 20) and line.min() == 0.0
    zd[5:15, 5:15] = -4.0  # a solid blob (gold)
    blob = D._clear_distance(zd, ("solid", 4.0))
    assert blob is not None and blob[3, 3] == 0.0 and blob[10, 10] > 10


def test_too_little_clear_map_falls_back_to_all() -> None:
    resp = np.arange(90 * 90, dtype=np.float32).reshape(90, 90)
    dist = np.zeros((30, 30))
    dist[:5] = 100.0  # 1/6 of the map clear: under _CLEAR_MIN
    np.testing.assert_array_equal(D._noise_sample(resp, dist, 3.0), resp[::3, ::3])
    dist[:10] = 100.0  # 1/3 clear
    np.testing.assert_array_equal(D._noise_sample(resp, dist, 3.0), resp[::3, ::3][:10].ravel())


@pytest.mark.parametrize("kw", [dict(ring_noise="clean"), dict(ring_noise="solid", ring_clip=None)])
def test_ring_noise_is_validated(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="ring_noise"):
        DetectConfig(**kw)  # type: ignore[arg-type]
    assert replace(DetectConfig(), ring_noise="solid").noise == ("solid", 4.0)
