"""What ``lipoclass predict`` accepts as INPUT: a particle dataset folder (``particles.csv``;
labels optional) or a plain folder of particle images, turned into an in-memory
``ParticleDataset`` so the same preparation code serves both (see docs/deployment.md)."""

from __future__ import annotations

import os
from pathlib import Path

from lipoclass.data import IMAGE_SUFFIXES, Particle, ParticleDataset, load_dataset
from lipoclass.errors import LipoclassError

__all__ = ["MASK_SUFFIX", "image_folder_dataset", "load_input"]

#: a mask beside its image is named ``<stem>_mask.<ext>``
MASK_SUFFIX = "_mask"


def _images_in(folder: Path) -> dict[str, Path]:
    """stem -> path for the image files directly in ``folder`` (sorted, no hidden files)."""
    out: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES:
            if f.stem in out:
                raise LipoclassError(
                    f"{f}: two images share the name {f.stem!r} ({out[f.stem].name}, {f.name})"
                )
            out[f.stem] = f
    return out


def image_folder_dataset(folder: str | os.PathLike[str]) -> ParticleDataset:
    """An unlabelled ``ParticleDataset`` over the images directly in ``folder``.

    Masks are optional and matched by name: ``masks/<stem>.<any image ext>`` or
    ``<stem>_mask.<any image ext>`` beside the image. Particles without a mask get the data
    layer's automatic mask for crop/masked modes. Ids are the file stems."""
    root = Path(folder)
    files = _images_in(root)
    mask_dir = root / "masks"
    side_masks = {s[: -len(MASK_SUFFIX)]: p for s, p in files.items() if s.endswith(MASK_SUFFIX)}
    dir_masks = _images_in(mask_dir) if mask_dir.is_dir() else {}
    images = {s: p for s, p in files.items() if not s.endswith(MASK_SUFFIX)}
    if not images:
        raise LipoclassError(
            f"{root}: no particles.csv and no image files ({', '.join(IMAGE_SUFFIXES)})"
        )
    orphans = sorted(set(side_masks) - set(images))
    if orphans:
        raise LipoclassError(
            f"{side_masks[orphans[0]]}: mask without an image named {orphans[0]!r}"
        )
    particles = []
    for row, (stem, img) in enumerate(images.items(), start=1):
        mask = dir_masks.get(stem) or side_masks.get(stem)
        particles.append(Particle(stem, img, mask, None, None, None, row))
    return ParticleDataset(root=root, particles=tuple(particles), classes=(), name=root.name)


def load_input(path: str | os.PathLike[str]) -> ParticleDataset:
    """A particle dataset folder (or its particles.csv) or a folder of images."""
    p = Path(path)
    if not p.exists():
        raise LipoclassError(f"{p}: input not found")
    if (p.is_file() and p.name == "particles.csv") or (p / "particles.csv").is_file():
        return load_dataset(p)
    if not p.is_dir():
        raise LipoclassError(f"{p}: input must be a dataset folder or a folder of images")
    return image_folder_dataset(p)
