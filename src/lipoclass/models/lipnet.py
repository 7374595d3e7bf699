"""The LipNet family of thesis section 7 (plus a fully convolutional, a hybrid and a tiny net).

LipNet-x has x convolutional layers: 3x3 kernels, 32 channels, *same* padding, stride 1,
ReLU; each block ends with 2x2 max pooling (LipNet-4c: a 2x2 stride-2 convolution) and
dropout 0.25; the dense head is 128 units + dropout 0.5 + C logits (softmax is applied by
callers). Sizes the thesis leaves open are documented in docs/cnn.md.

Every model follows the timm split: ``forward_features(x)`` (B,1,S,S) -> feature map
(B,F,h,w); ``forward_head(f)`` -> logits (B,C); ``forward(x)`` = both. The hybrid model takes
an extra ``aux`` (B,K) tensor of size features (see ``size_features``)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from lipoclass.errors import LipoclassError
from lipoclass.models.layers import Dropout
from lipoclass.models.registry import register_model

__all__ = [
    "AUX_FEATURES",
    "FCNLipNet",
    "HybridLipNet",
    "LipNet",
    "LipNetC",
    "TinyNet",
    "size_features",
]

AUX_FEATURES = ("log_bbox_width", "log_bbox_height", "log_mask_area", "log_diameter_nm", "px_known")


def size_features(meta: np.ndarray) -> np.ndarray:
    """Size features for ``lipnet_hybrid`` from ``Prepared.meta`` (N, 6) -> (N, 5) float32.

    Columns (``AUX_FEATURES``): log bbox width / height (px), log mask area (px^2), log
    equivalent-circle diameter in nm when the pixel size is known (else 0) and a 0/1 flag
    saying whether it is known. Pixel measures alone carry the size where the magnification is
    constant; the nm diameter makes sizes comparable across magnifications."""
    meta = np.asarray(meta, dtype=np.float64)
    if meta.ndim != 2 or meta.shape[1] < 6:
        raise ValueError(f"meta must be (N, 6) as in Prepared.meta, got {meta.shape}")
    bw, bh, area, px = meta[:, 2], meta[:, 3], meta[:, 4], meta[:, 5]
    known = np.isfinite(px) & (px > 0)
    diam_px = 2.0 * np.sqrt(np.maximum(area, 1.0) / math.pi)
    diam_nm = np.where(known, np.log(np.maximum(diam_px * np.where(known, px, 1.0), 1e-6)), 0.0)
    out = np.stack(
        [
            np.log(np.maximum(bw, 1.0)),
            np.log(np.maximum(bh, 1.0)),
            np.log(np.maximum(area, 1.0)),
            diam_nm,
            known.astype(np.float64),
        ],
        axis=1,
    )
    return out.astype(np.float32)


def _check_size(name: str, in_size: int, minimum: int) -> None:
    if in_size < minimum:
        raise LipoclassError(f"model {name}: input size {in_size} px is too small (min {minimum})")


def _conv_block(cin: int, cout: int, convs: int, down: str, drop: float) -> nn.Sequential:
    """``convs`` x (conv3x3 same + ReLU), then 2x2 max pool or a 2x2 stride-2 conv, dropout."""
    layers: list[nn.Module] = []
    for i in range(convs):
        layers.append(nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1))
        if down == "pool" and i == convs - 1:
            # max-pool before the last ReLU: relu(max(x)) == max(relu(x)) exactly (ReLU is
            # monotone), at a quarter of the ReLU cost; parameter indices are unchanged
            layers.append(nn.MaxPool2d(2))
        layers.append(nn.ReLU(inplace=True))
    if down == "stride":
        layers += [nn.Conv2d(cout, cout, 2, stride=2), nn.ReLU(inplace=True)]
    if drop > 0:
        layers.append(Dropout(drop))
    return nn.Sequential(*layers)


class LipNet(nn.Module):
    """Conv blocks with max pooling, then flatten -> dense ``hidden`` -> dropout -> dense C.

    ``blocks`` lists the number of 3x3 convolutions per block (LipNet-4: (2, 2))."""

    needs_aux = False

    def __init__(
        self,
        num_classes: int,
        in_size: int,
        blocks: tuple[int, ...],
        width: int = 32,
        hidden: int = 128,
        drop_conv: float = 0.25,
        drop_dense: float = 0.5,
        name: str = "lipnet",
    ) -> None:
        super().__init__()
        _check_size(name, in_size, 2 ** len(blocks))
        self.features = nn.Sequential(
            *[
                _conv_block(1 if i == 0 else width, width, n, "pool", drop_conv)
                for i, n in enumerate(blocks)
            ]
        )
        side = in_size // 2 ** len(blocks)
        self.num_features = width * side * side
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(self.num_features, hidden),
            nn.ReLU(inplace=True),
            Dropout(drop_dense),
            nn.Linear(hidden, num_classes),
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B,1,S,S) -> (B,32,S/2^b,S/2^b)

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.head(f)  # (B,32,h,w) -> (B,C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class LipNetC(nn.Module):
    """LipNet-4c: pooling replaced by 2x2 stride-2 convolutions (Springenberg et al.), and
    flatten + dense replaced by a 1x1 convolution to C channels + global average."""

    needs_aux = False

    def __init__(
        self,
        num_classes: int,
        in_size: int,
        blocks: tuple[int, ...] = (2, 2),
        width: int = 32,
        drop_conv: float = 0.25,
        drop_dense: float = 0.5,
    ) -> None:
        super().__init__()
        _check_size("lipnet4c", in_size, 2 ** len(blocks))
        self.features = nn.Sequential(
            *[
                _conv_block(1 if i == 0 else width, width, n, "stride", drop_conv)
                for i, n in enumerate(blocks)
            ]
        )
        self.head = nn.Sequential(
            Dropout(drop_dense),
            nn.Conv2d(width, num_classes, 1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B,1,28,28) -> (B,32,7,7)

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.head(f)  # (B,32,7,7) -> 1x1 conv (B,C,7,7) -> mean (B,C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class FCNLipNet(nn.Module):
    """Fully convolutional: (32,32)+pool, (64,64)+pool, 64 conv, then 1x1 conv to C channels
    and global average pooling, so any input side >= 4 px works (train and predict)."""

    needs_aux = False

    def __init__(
        self, num_classes: int, in_size: int, drop_conv: float = 0.25, drop_dense: float = 0.5
    ) -> None:
        super().__init__()
        _check_size("lipnet_fcn", in_size, 4)
        self.features = nn.Sequential(
            _conv_block(1, 32, 2, "pool", drop_conv),
            _conv_block(32, 64, 2, "pool", drop_conv),
            _conv_block(64, 64, 1, "none", 0.0),
        )
        self.head = nn.Sequential(
            Dropout(drop_dense),
            nn.Conv2d(64, num_classes, 1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B,1,S,S) -> (B,64,S/4,S/4)

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.head(f)  # (B,64,h,w) -> (B,C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class HybridLipNet(nn.Module):
    """LipNet-4 trunk + a small MLP over size features (``size_features``), concatenated
    before the last dense layer. ``aux_mean``/``aux_std`` buffers standardise the size
    features; ``set_aux_stats`` fits them on the training part (saved with the weights)."""

    needs_aux = True

    def __init__(
        self,
        num_classes: int,
        in_size: int,
        aux_dim: int = len(AUX_FEATURES),
        aux_hidden: int = 16,
        hidden: int = 128,
        drop_conv: float = 0.25,
        drop_dense: float = 0.5,
    ) -> None:
        super().__init__()
        _check_size("lipnet_hybrid", in_size, 4)
        self.aux_dim = aux_dim
        self.features = nn.Sequential(
            _conv_block(1, 32, 2, "pool", drop_conv), _conv_block(32, 32, 2, "pool", drop_conv)
        )
        side = in_size // 4
        self.image_head = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * side * side, hidden), nn.ReLU(inplace=True)
        )
        self.aux_mlp = nn.Sequential(nn.Linear(aux_dim, aux_hidden), nn.ReLU(inplace=True))
        self.dropout = Dropout(drop_dense)
        self.classifier = nn.Linear(hidden + aux_hidden, num_classes)
        self.register_buffer("aux_mean", torch.zeros(aux_dim))
        self.register_buffer("aux_std", torch.ones(aux_dim))

    def set_aux_stats(self, aux: np.ndarray | torch.Tensor) -> None:
        """Standardise size features with the mean/std of ``aux`` (N, K) (training part)."""
        a = torch.as_tensor(np.asarray(aux), dtype=torch.float32)
        with torch.no_grad():
            self.aux_mean.copy_(a.mean(0))  # type: ignore[operator]
            self.aux_std.copy_(a.std(0, unbiased=False).clamp_min(1e-3))  # type: ignore[operator]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B,1,28,28) -> (B,32,7,7)

    def forward_head(self, f: torch.Tensor, aux: torch.Tensor | None = None) -> torch.Tensor:
        if aux is None:
            raise LipoclassError("model lipnet_hybrid needs size features (aux), none given")
        z = (aux.to(f.dtype) - self.aux_mean) / self.aux_std  # type: ignore[operator]
        a = self.aux_mlp(z)  # (B,K) -> (B,16)
        h = torch.cat([self.image_head(f), a], dim=1)  # (B,128+16)
        return self.classifier(self.dropout(h))  # (B,C)

    def forward(self, x: torch.Tensor, aux: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_head(self.forward_features(x), aux)


class TinyNet(nn.Module):
    """A few hundred parameters, for fast tests: conv3x3-4 + pool, global average, dense C."""

    needs_aux = False

    def __init__(
        self,
        num_classes: int,
        in_size: int,
        width: int = 4,
        drop_conv: float = 0.0,
        drop_dense: float = 0.0,
    ) -> None:
        super().__init__()
        _check_size("tiny", in_size, 2)
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)
        )
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            Dropout(drop_dense),
            nn.Linear(width, num_classes),
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B,1,S,S) -> (B,4,S/2,S/2)

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.head(f)  # (B,4,h,w) -> (B,C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model("lipnet1", input_size=28)
def lipnet1(num_classes: int, in_size: int, **kw: float) -> nn.Module:
    """One conv block (1 conv + pool + dropout), dense 128, dense C."""
    return LipNet(num_classes, in_size, (1,), name="lipnet1", **kw)  # type: ignore[arg-type]


@register_model("lipnet2", input_size=28)
def lipnet2(num_classes: int, in_size: int, **kw: float) -> nn.Module:
    """LipNet-1 plus one more conv block (two blocks of one conv)."""
    return LipNet(num_classes, in_size, (1, 1), name="lipnet2", **kw)  # type: ignore[arg-type]


@register_model("lipnet4", input_size=28, note="recommended")
def lipnet4(num_classes: int, in_size: int, **kw: float) -> nn.Module:
    """Two blocks of 2x conv3x3-32 + maxpool + dropout 0.25; dense 128 + dropout 0.5."""
    return LipNet(num_classes, in_size, (2, 2), name="lipnet4", **kw)  # type: ignore[arg-type]


@register_model("lipnet4c", input_size=28)
def lipnet4c(num_classes: int, in_size: int, **kw: float) -> nn.Module:
    """LipNet-4 with strided convolutions and a 1x1-conv + global-average head."""
    return LipNetC(num_classes, in_size, **kw)  # type: ignore[arg-type]


@register_model("lipnet6", input_size=32)
def lipnet6(num_classes: int, in_size: int, **kw: float) -> nn.Module:
    """LipNet-4 with a third block of 2 convs (32 px input: 32 -> 16 -> 8 -> 4)."""
    return LipNet(num_classes, in_size, (2, 2, 2), name="lipnet6", **kw)  # type: ignore[arg-type]


@register_model("lipnet_fcn", input_size=28)
def lipnet_fcn(num_classes: int, in_size: int, **kw: float) -> nn.Module:
    """Fully convolutional with global pooling; any input side >= 4."""
    return FCNLipNet(num_classes, in_size, **kw)


@register_model("lipnet_hybrid", input_size=28, note="also gets the particle size")
def lipnet_hybrid(num_classes: int, in_size: int, **kw: float) -> nn.Module:
    """LipNet-4 features + MLP over size features; ``forward(x, aux)``."""
    return HybridLipNet(num_classes, in_size, **kw)  # type: ignore[arg-type]


@register_model("tiny", input_size=16, note="for tests")
def tiny(num_classes: int, in_size: int, **kw: float) -> nn.Module:
    """Few parameters, for tests."""
    return TinyNet(num_classes, in_size, **kw)  # type: ignore[arg-type]
