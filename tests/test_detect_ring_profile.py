"""The ring filter's cross-section measured on the micrograph (``ring_profile="measured"``,
seventeenth round): the second pass uses the membranes' own profile, and with fewer than
three strong candidates the first pass stands."""

from __future__ import annotations

import numpy as np
import pytest

from lipoclass.micrograph import detect as D
from lipoclass.micrograph.detect import DetectConfig, detect_candidates


def _cfg(ring_profile: str = "gaussian") -> DetectConfig:
    return DetectConfig(min_diameter=40.0, max_diameter=120.0, unit="px", verifier="none",
                        ring_profile=ring_profile)  # fmt: skip


def _micrograph(centres: list[tuple[int, int]], seed: int = 0) -> np.ndarray:
    """Bright-field image (dark particles) of rings of radius 25 px whose membrane is a
    wide dark band (sigma 2 px) with a light halo outside, plus noise (the membrane a few
    noise levels deep, as in a micrograph; the ring map is clipped at +-4 robust z)."""
    yy, xx = np.mgrid[:320, :320].astype(np.float64)
    img = np.zeros((320, 320))
    for cy, cx in centres:
        d = np.hypot(yy - cy, xx - cx) - 25.0
        img += np.exp(-0.5 * (d / 2.0) ** 2) - 0.3 * np.exp(-0.5 * ((d - 5.0) / 2.0) ** 2)
    return 100.0 - img - np.random.default_rng(seed).normal(0.0, 0.3, img.shape)


def _maps(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    cfg = _cfg()
    dmin, dmax = cfg.diameters_px(None)
    factor = D._work_factor(dmin, image.shape)
    work = D._working(image, factor, False)
    z, _low = D._bandpass(work, D._sigma(cfg, None, factor))
    return z, D._ring_map(image, work, z, factor), dmin / 2 / factor, dmax / 2 / factor


def test_measured_profile_is_the_membranes_and_changes_the_rings() -> None:
    centres = [(60, 60), (60, 160), (60, 260), (170, 60), (170, 160), (170, 260), (270, 110)]
    image = _micrograph(centres)
    z, zr, rmin, rmax = _maps(image)
    rings, profile = D._measured_rings(z, zr, rmin, rmax, 4.0, 1)
    assert profile is not None and profile.shape == D._PROFILE_OFFSETS.shape
    # peaked on the membrane, wider than the thin ring (Gaussian sigma 0.8 px: 1.9 px at
    # half maximum)
    above = D._PROFILE_OFFSETS[profile >= 0.5]
    assert above.max() - above.min() >= 3.0
    assert abs(D._PROFILE_OFFSETS[np.argmax(profile)]) <= 1.0
    gauss = D._ring_candidates(zr, rmin, rmax, 4.0, 1)
    assert sorted(rings) != sorted(gauss)
    det_g = detect_candidates(image, _cfg(), verifier=False)
    det_m = detect_candidates(image, _cfg("measured"), verifier=False)
    for det in (det_g, det_m):  # every ring found, centred
        for cy, cx in centres:
            assert np.hypot(det.cy - cy, det.cx - cx).min() < 3.0
    assert not np.allclose(np.sort(det_g.significance)[-7:], np.sort(det_m.significance)[-7:])


def test_few_strong_candidates_keep_the_first_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    image = _micrograph([(120, 150), (200, 200), (70, 60)], seed=1)
    z, zr, rmin, rmax = _maps(image)
    strong = len(D._strong_rings(z, D._ring_candidates(zr, rmin, rmax, 4.0, 1)))
    assert strong >= 3 and D._measured_rings(z, zr, rmin, rmax, 4.0, 1)[1] is not None
    monkeypatch.setattr(D, "_PROFILE_MIN", strong + 1)  # one strong candidate short
    rings, profile = D._measured_rings(z, zr, rmin, rmax, 4.0, 1)
    assert profile is None
    assert sorted(rings) == sorted(D._ring_candidates(zr, rmin, rmax, 4.0, 1))
    det_g = detect_candidates(image, _cfg(), verifier=False)
    det_m = detect_candidates(image, _cfg("measured"), verifier=False)
    np.testing.assert_array_equal(det_g.significance, det_m.significance)
    np.testing.assert_array_equal(det_g.labels, det_m.labels)


def test_ring_profile_is_validated() -> None:
    with pytest.raises(ValueError, match="ring_profile"):
        DetectConfig(ring_profile="wide")
    assert DetectConfig().ring_profile in D.RING_PROFILES
