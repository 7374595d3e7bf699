"""The ring map is clipped at +-4 robust z before the ring filter bank (nineteenth round):
very dark clutter (gold, ice) no longer dominates the ring responses around it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage as ndi

from lipoclass.choices import RING_CLIP
from lipoclass.micrograph import detect as D
from lipoclass.micrograph.detect import DetectConfig, detect_candidates

RINGS = [(100, 100), (100, 280), (280, 100), (280, 280)]


def _micrograph(gold: int, seed: int = 0) -> np.ndarray:
    """Four membrane rings (radius 30 px, about one noise level deep) and ``gold`` solid
    disks 30 noise levels deep, bright-field, noise 1."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:384, :384].astype(np.float64)
    img = np.zeros((384, 384))
    for cy, cx in RINGS:
        img += np.exp(-0.5 * ((np.hypot(yy - cy, xx - cx) - 30.0) / 1.5) ** 2)
    for _ in range(gold):
        gy, gx = rng.uniform(0, 384, 2)
        img += 30.0 * (np.hypot(yy - gy, xx - gx) < rng.uniform(3, 8))
    return 100.0 - ndi.gaussian_filter(img, 1.0) - rng.normal(0.0, 1.0, img.shape)


def _found(det: D.Detections) -> int:
    return sum(bool(len(det)) and np.hypot(det.cy - y, det.cx - x).min() < 4 for y, x in RINGS)


def test_ring_map_is_clipped_and_z_left_alone() -> None:
    z = np.array([[-9.0, -2.0], [3.0, 12.0]], np.float32)
    zr = D._mix_texture(z, None)
    assert zr.dtype == np.float32 and zr is not z
    np.testing.assert_array_equal(zr, [[-4.0, -2.0], [3.0, 4.0]])
    assert z[1, 1] == 12.0
    mixed = D._mix_texture(z, (0.5, np.full_like(z, -20.0)))  # 0.5 z + 0.5 (-20)
    np.testing.assert_array_equal(mixed, [[-4.0, -4.0], [-4.0, -4.0]])
    assert D._mix_texture(z, None, None) is z


@pytest.mark.parametrize("bad", [0.5, 1000.0, float("nan")])
def test_ring_clip_is_validated(bad: float) -> None:
    with pytest.raises(ValueError, match="ring_clip"):
        DetectConfig(ring_clip=bad)


def test_clip_removes_clutter_rings_and_keeps_the_membranes() -> None:
    cfg = DetectConfig(min_diameter=40, max_diameter=120, unit="px", verifier="none")
    off = replace(cfg, ring_clip=None)
    assert cfg.ring_clip == RING_CLIP == 4.0
    image = _micrograph(gold=6)
    clipped = detect_candidates(image, cfg, verifier=False)
    raw = detect_candidates(image, off, verifier=False)
    assert _found(clipped) == _found(raw) == len(RINGS)
    assert len(clipped) * 2 <= len(raw)  # the rings the gold disks made are gone
    # without clutter the clip changes nothing here
    clean = _micrograph(gold=0)
    a = detect_candidates(clean, cfg, verifier=False)
    b = detect_candidates(clean, off, verifier=False)
    assert _found(a) == _found(b) == len(RINGS) and abs(len(a) - len(b)) <= 1
