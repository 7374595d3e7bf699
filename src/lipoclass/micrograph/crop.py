"""``lipoclass crop``: micrographs + annotations -> a particle dataset (the project layout),
one crop per particle, centred on it with ``surround`` px of surroundings (50 as in the
thesis), with its mask; ``sample`` is the micrograph stem or comes from a sample table."""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lipoclass.data import DatasetWriter
from lipoclass.errors import LipoclassError
from lipoclass.micrograph.annotations import AnnotationSource, ParticleAnnotation
from lipoclass.micrograph.io import (
    Micrograph,
    MicrographWarning,
    check_micrographs,
    read_micrograph,
)

__all__ = ["CropConfig", "CropResult", "crop_micrographs", "crop_particle"]


@dataclass(frozen=True)
class CropConfig:
    """``surround``: px of surroundings on every side of the particle's box; ``keep_edge``:
    keep particles whose crop leaves the micrograph (padded with the crop's median) instead
    of skipping them; ``min_area``: smaller masks (px) are skipped as specks."""

    surround: int = 50
    keep_edge: bool = False
    min_area: int = 20

    def __post_init__(self) -> None:
        if not 0 <= self.surround <= 2000:
            raise ValueError(f"surround must be 0..2000 px, got {self.surround}")
        if self.min_area < 1:
            raise ValueError(f"min_area must be at least 1, got {self.min_area}")


@dataclass
class CropResult:
    """What ``crop_micrographs`` did."""

    out: Path
    crops: int = 0
    edge_skipped: int = 0
    edge_padded: int = 0
    small_skipped: int = 0
    per_micrograph: dict[str, int] = field(default_factory=dict)

    def text(self) -> str:
        lines = [f"{self.crops} particle crop(s) from {len(self.per_micrograph)} micrograph(s) "
                 f"-> {self.out}"]  # fmt: skip
        if self.edge_skipped:
            lines.append(
                f"{self.edge_skipped} particle(s) at the micrograph edge skipped (their crop "
                f"would leave the image; --keep-edge pads them instead)"
            )
        if self.edge_padded:
            lines.append(f"{self.edge_padded} particle(s) at the micrograph edge padded")
        if self.small_skipped:
            lines.append(f"{self.small_skipped} particle(s) with a tiny mask skipped")
        return "\n".join(lines)


def crop_particle(
    image: np.ndarray, ann: ParticleAnnotation, surround: int, keep_edge: bool
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]] | None:
    """(crop (h, w) in the micrograph's dtype, mask (h, w) bool, (y0, x0) of the crop in the
    micrograph) centred on ``ann``; None when the crop would leave the image and not
    ``keep_edge`` (then the missing part is the crop's median)."""
    h, w = image.shape
    bh, bw = max(1, round(ann.height)), max(1, round(ann.width))
    y0 = round(ann.cy - (bh - 1) / 2) - surround
    x0 = round(ann.cx - (bw - 1) / 2) - surround
    y1, x1 = y0 + bh + 2 * surround, x0 + bw + 2 * surround
    inside = y0 >= 0 and x0 >= 0 and y1 <= h and x1 <= w
    if not inside and not keep_edge:
        return None
    cy0, cx0, cy1, cx1 = max(0, y0), max(0, x0), min(h, y1), min(w, x1)
    part = image[cy0:cy1, cx0:cx1]
    if inside:
        crop = part.copy()
    else:
        crop = np.full((y1 - y0, x1 - x0), np.median(part), dtype=image.dtype)
        crop[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = part
    mask = np.zeros(crop.shape, dtype=bool)
    # paste the particle's mask, clipped to the crop
    my0, mx0 = ann.top - y0, ann.left - x0
    mh, mw = ann.mask.shape
    sy0, sx0 = max(0, -my0), max(0, -mx0)
    sy1, sx1 = min(mh, crop.shape[0] - my0), min(mw, crop.shape[1] - mx0)
    if sy1 > sy0 and sx1 > sx0:
        mask[my0 + sy0 : my0 + sy1, mx0 + sx0 : mx0 + sx1] = ann.mask[sy0:sy1, sx0:sx1]
    return crop, mask, (y0, x0)


def _as_output(crop: np.ndarray) -> tuple[np.ndarray, str]:
    """Crop in a dtype the dataset layout stores: uint8 PNG, uint16 / float32 TIFF."""
    if crop.dtype == np.uint8:
        return crop, ".png"
    if crop.dtype == np.uint16:
        return crop, ".tif"
    return crop.astype(np.float32), ".tif"


def _crop_micrograph(
    writer: DatasetWriter, mic: Micrograph, source: AnnotationSource, cfg: CropConfig,
    samples: dict[str, str] | None, result: CropResult, prov: list[dict[str, object]],
) -> int:  # fmt: skip
    """Crop the annotated particles of one micrograph into ``writer`` (provenance rows into
    ``prov``, skip counts into ``result``); returns how many were written."""
    anns = source.particles(mic)
    n = 0
    for ann in anns:
        if int(ann.mask.sum()) < cfg.min_area:
            result.small_skipped += 1
            continue
        got = crop_particle(mic.image, ann, cfg.surround, cfg.keep_edge)
        if got is None:
            result.edge_skipped += 1
            continue
        crop, mask, (y0, x0) = got
        if not (y0 >= 0 and x0 >= 0 and y0 + crop.shape[0] <= mic.shape[0]
                and x0 + crop.shape[1] <= mic.shape[1]):  # fmt: skip
            result.edge_padded += 1
        arr, suffix = _as_output(crop)
        pid = f"{mic.name}_{ann.key.zfill(4)}"  # ids sort by particle number
        writer.add(
            pid,
            image=arr,
            mask=mask,
            label=ann.label,
            pixel_size_nm=mic.pixel_size_nm,
            sample=samples[mic.name] if samples is not None else mic.name,
            suffix=suffix,
            micrograph=mic.name,
        )
        prov.append(
            {
                "id": pid,
                "micrograph": str(mic.path),
                "particle": ann.key,
                "y": round(ann.cy, 2),
                "x": round(ann.cx, 2),
                "crop_y0": y0,
                "crop_x0": x0,
            }
        )
        n += 1
    return n


def crop_micrographs(
    micrographs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    source: AnnotationSource,
    cfg: CropConfig | None = None,
    *,
    pixel_size_nm: float | None = None,
    samples: dict[str, str] | None = None,
    require_pixel_size: bool = True,
    progress: bool | None = None,
) -> CropResult:
    """Crop every annotated particle of ``micrographs`` into the new dataset ``out``.
    Inputs and the output location are checked before any pixel is read; any error leaves
    nothing behind (``DatasetWriter``'s staging folder). ``progress``: a bar over the
    micrographs (default: when stderr is a terminal)."""
    from lipoclass.micrograph.detect import micrograph_bar

    cfg = cfg or CropConfig()
    out = Path(out)
    if out.exists():
        raise LipoclassError(f"{out}: already exists (choose another --out)")
    paths, pxs = check_micrographs(
        micrographs, pixel_size_nm, require_pixel_size, samples, "particle ids would clash"
    )
    result = CropResult(out)
    with DatasetWriter(
        out,
        name=out.name,
        classes=list(source.classes),
        description=f"particle crops from {len(paths)} micrograph(s) (lipoclass crop)",
        source="lipoclass crop",
        extra={"surround_px": cfg.surround},
    ) as writer:
        prov: list[dict[str, object]] = []
        bar = micrograph_bar(len(paths), progress, "crop")
        for p in paths:
            mic: Micrograph = read_micrograph(p, pixel_size_nm=pxs[p], require_pixel_size=False)
            n = _crop_micrograph(writer, mic, source, cfg, samples, result, prov)
            result.per_micrograph[mic.name] = n
            bar.update(1)
            if n == 0:
                warnings.warn(
                    MicrographWarning(f"{mic.path}: no particle cropped from this micrograph"),
                    stacklevel=2,
                )
        bar.close()
        if not writer.rows:
            raise LipoclassError("no particle crops written (no annotated particle found)")
        with (writer.staging / "crops.csv").open("w", newline="") as fh:
            cw = csv.DictWriter(fh, fieldnames=list(prov[0]))
            cw.writeheader()
            cw.writerows(prov)
    result.crops = sum(result.per_micrograph.values())
    return result
