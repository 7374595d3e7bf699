"""Learned candidate finder (twenty-second round, docs/micrographs.md): a small fully
convolutional network that marks liposome centres on each octave of the detector's working
image, beside the ring filter. On an unseen simulator it finds far more liposomes among the
same number of candidates than the ring filter (thirdsim 0.82 against 0.60), but its own
score is less precise there than the packaged verifier, so ``DetectConfig(finder=
"ring+learned")`` only adds its confident detections that no accepted ring detection already
covers and that are not solid particles (``solid_particles``: most of its false detections on
an unseen simulator are dark solid particles with no membrane; twenty-third round); an
option, the default stays "ring".

One network serves every octave (block means by 2^o of the working image): on octave o it
answers for outline radii ``R0``-2 ``R0`` px there, so the finder is scale-free like the ring
filter bank. Each octave map is high-passed (Gaussian background at ``BG_SIGMA`` px removed),
robust-z scaled and clipped at +-``CLIP``. The packaged weights (``finder.npz``) were trained
by ``benchmarks/learned_finder.py`` on the packaged verifier's training micrographs only."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lipoclass.errors import LipoclassError

__all__ = [
    "BG_SIGMA",
    "CLIP",
    "DEFAULT_FINDER",
    "R0",
    "LearnedFinder",
    "OnnxFinder",
    "covered",
    "finder_network",
    "fused_network",
    "load_finder",
    "octave_maps",
    "solid_particles",
    "suppress_circles",
]

R0 = 5.0  # px: smallest outline radius an octave answers for (largest: 2 R0)
BG_SIGMA = 30.0  # px: Gaussian background removed from each octave map
CLIP = 5.0  # robust z at which an octave map is clipped
DEFAULT_FINDER = Path(__file__).with_name("finder.npz")


def octave_maps(work: np.ndarray, rmax: float) -> list[np.ndarray]:
    """The normalised octave maps of a working image up to the octave holding ``rmax``
    (working px): octave o is the block mean by 2^o."""

    m = np.asarray(work, np.float32)
    maps = []
    o = 0
    while True:
        hp = m - _background(m)
        med = float(np.median(hp))
        mad = float(np.median(np.abs(hp - med))) * 1.4826 or 1.0
        maps.append(np.clip((hp - med) / mad, -CLIP, CLIP).astype(np.float32))
        if R0 * 2 ** (o + 1) >= rmax or min(m.shape) < 2 * 2 * R0 + 4:
            return maps
        h, w = (m.shape[0] // 2) * 2, (m.shape[1] // 2) * 2
        m = m[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
        o += 1


def _background(m: np.ndarray) -> np.ndarray:
    """``ndimage.gaussian_filter(m, BG_SIGMA, mode="reflect")`` (its 4-sigma kernel, float32
    result within one float32 step) by FFT along each axis: 2.3x faster on a 2048 px map
    (twenty-third round); small maps take the direct filter."""
    from scipy import ndimage as ndi
    from scipy.signal import fftconvolve

    r = int(4.0 * BG_SIGMA + 0.5)
    if min(m.shape) <= r:
        return np.asarray(ndi.gaussian_filter(m, BG_SIGMA, mode="reflect"))
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / BG_SIGMA) ** 2)
    k /= k.sum()
    p = np.pad(np.asarray(m, np.float64), r, mode="symmetric")  # ndimage's "reflect"
    p = fftconvolve(p, k[:, None], mode="valid", axes=0)
    return np.asarray(fftconvolve(p, k[None, :], mode="valid", axes=1), dtype=m.dtype)


def finder_network() -> Any:
    """The finder: 2 convolutions at the octave's resolution, 4 (dilated 1, 2, 4, 2) at half
    of it, heat logit and log2(radius / R0) at half resolution, upsampled (receptive field
    ~42 px; 35 k weights)."""
    import torch.nn as nn

    def cbr(i: int, o: int, d: int = 1) -> list[nn.Module]:
        return [nn.Conv2d(i, o, 3, padding=d, dilation=d), nn.BatchNorm2d(o), nn.ReLU()]

    return nn.Sequential(
        *cbr(1, 16), *cbr(16, 16), nn.AvgPool2d(2),
        *cbr(16, 32), *cbr(32, 32, 2), *cbr(32, 32, 4), *cbr(32, 32, 2),
        nn.Conv2d(32, 2, 1), nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
    )  # fmt: skip


def covered(c: np.ndarray, by: np.ndarray) -> np.ndarray:
    """Which circles of ``c`` (N, 4: score, cy, cx, r) another of ``by`` (M, 4) already
    holds: a centre within 0.5 x its radius and radii within x 1.6 (bool (N,); the rule of
    ``suppress_circles``)."""
    if len(c) == 0 or len(by) == 0:
        return np.zeros(len(c), bool)
    d = np.hypot(c[:, None, 1] - by[None, :, 1], c[:, None, 2] - by[None, :, 2])
    ratio = c[:, None, 3] / by[None, :, 3]
    return np.any((d < 0.5 * by[None, :, 3]) & (ratio > 1 / 1.6) & (ratio < 1.6), axis=1)


def suppress_circles(c: np.ndarray, max_overlap: float = 0.5) -> np.ndarray:
    """Greedy by score (column 0) over circles (N, 4: score, cy, cx, r): a circle is dropped
    when its centre lies within ``max_overlap`` x a kept better circle's radius and the radii
    differ by under x 1.6."""
    from scipy.spatial import cKDTree

    c = c[np.argsort(-c[:, 0], kind="stable")]
    if len(c) == 0:
        return c
    tree = cKDTree(c[:, 1:3])
    dropped = np.zeros(len(c), bool)
    for i in range(len(c)):
        if dropped[i]:
            continue
        for j in tree.query_ball_point(c[i, 1:3], max_overlap * c[i, 3]):
            if j > i and 1 / 1.6 < c[j, 3] / c[i, 3] < 1.6:
                dropped[j] = True
    return c[~dropped]


def solid_particles(finder: LearnedFinder, feats: np.ndarray, names: Sequence[str]) -> list[str]:
    """The reason each detection of the finder (rows of ``feats``, columns ``names``) is not a
    vesicle, "" where none: a feature above its limit in the finder's ``solid_gate`` (twenty-
    third round: ``inner_rim_ratio`` and ``rim_side_balance``, the interior as dark as the
    membrane, at their 99.5th percentile over the finder's true detections on the training
    simulators). Out of domain most of the finder's false detections are dark solid particles
    (ice, aggregates), which a vesicle's membrane tells apart; a finder without a gate rejects
    nothing."""
    gate = finder.info.get("solid_gate") or {}
    cols = {n: list(names).index(n) for n in gate}
    out: list[str] = []
    for row in np.asarray(feats, np.float64).reshape(len(feats), len(names)):
        over = [f"{n} {row[j]:.2f} > {gate[n]:.2f}" for n, j in cols.items() if row[j] > gate[n]]
        out.append(
            "solid particle, no membrane: interior as dark as the rim (learned finder; "
            + ", ".join(over)
            + ")"
            if over
            else ""
        )
    return out


@dataclass(frozen=True)
class LearnedFinder:
    """A trained finder network (eval mode) and its training record (``info``)."""

    net: Any
    info: dict[str, Any]
    #: logits (2, H, W) of a map (H, W) float32, the inference path (``OnnxFinder``); None:
    #: ``net`` through PyTorch
    fast: Any = field(default=None, compare=False, repr=False)

    def find(self, work: np.ndarray, rmax: float, min_heat: float = 0.05) -> np.ndarray:
        """Candidates (N, 4): heat 0-1, centre y, x and radius in working px, with heat >=
        ``min_heat``, after ``suppress_circles`` (a lower ``min_heat`` leaves the survivors
        above it unchanged: only better circles suppress)."""
        from scipy import ndimage as ndi

        logits = self.fast if self.fast is not None else functools.partial(_torch_logits, self.net)
        rows = []
        for o, mp in enumerate(octave_maps(work, rmax)):
            h, w = mp.shape
            x = np.pad(mp, ((0, (-h) % 2), (0, (-w) % 2)), mode="reflect")
            y = np.ascontiguousarray(logits(x)[:, :h, :w])
            heat = 1 / (1 + np.exp(-y[0]))
            peak = (heat == ndi.maximum_filter(heat, 3)) & (heat >= min_heat)
            iy, ix = np.nonzero(peak)
            s = 2**o
            rows.append(np.column_stack([heat[iy, ix], (iy + 0.5) * s - 0.5,
                                         (ix + 0.5) * s - 0.5,
                                         R0 * 2.0 ** y[1, iy, ix] * s]))  # fmt: skip
        c = np.concatenate(rows) if rows else np.zeros((0, 4))
        return suppress_circles(c.astype(np.float64))

    def save(self, path: Path) -> None:
        """Weights and ``info`` as one .npz (no pickle), written then renamed."""
        arrays = {k: v.detach().cpu().numpy() for k, v in self.net.state_dict().items()}
        tmp = path.with_name(f".{path.stem}.tmp.npz")
        np.savez(tmp, __info__=np.str_(json.dumps(self.info)), **arrays)
        tmp.replace(path)


def _torch_logits(net: Any, x: np.ndarray) -> np.ndarray:
    """Logits (2, H, W) of the PyTorch ``net`` on a map ``x`` (H, W) float32."""
    import torch

    with torch.no_grad():
        t = torch.from_numpy(np.asarray(x, np.float32))[None, None]
        return np.asarray(net(t.to(memory_format=torch.channels_last))[0].numpy())


class OnnxFinder:
    """The finder's inference path: ``fused_network(net)`` as an ONNX graph built from its
    weights, run by onnxruntime (the same function within float rounding; on the 2-core VM
    octave 0 of a 2048 px working image takes 0.57 s against PyTorch's 0.85 s fused and 1.48
    s unfused; twenty-fourth round). Built without ``torch.onnx`` (0.7 s an export; the graph
    here takes milliseconds), so loading a finder stays quick."""

    def __init__(self, net: Any, threads: int) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, threads)
        so.log_severity_level = 3
        model = _onnx_graph(fused_network(net)).SerializeToString()
        self.session = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Logits (2, H, W) of a map ``x`` (H, W) float32 of even height and width."""
        (y,) = self.session.run(None, {"x": np.asarray(x, np.float32)[None, None]})
        return np.asarray(y[0])


def _onnx_graph(fused: Any) -> Any:
    """An ONNX model of the fused finder (convolutions, ReLUs, one 2 x 2 average pool, the
    bilinear x 2 upsampling at half-pixel centres, as ``nn.Upsample(align_corners=False)``)."""
    import onnx
    import torch.nn as nn
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, prev = [], [], "x"
    for k, m in enumerate(fused):
        out = f"t{k}"
        if isinstance(m, nn.Conv2d):
            w = numpy_helper.from_array(m.weight.detach().numpy().astype(np.float32), f"w{k}")
            bias = m.bias.detach().numpy() if m.bias is not None else np.zeros(m.out_channels)
            b = numpy_helper.from_array(bias.astype(np.float32), f"b{k}")
            inits += [w, b]
            p, d = int(m.padding[0]), int(m.dilation[0])
            nodes.append(helper.make_node("Conv", [prev, f"w{k}", f"b{k}"], [out],
                                          kernel_shape=list(m.kernel_size), pads=[p] * 4,
                                          dilations=[d, d], strides=[1, 1]))  # fmt: skip
        elif isinstance(m, nn.ReLU):
            nodes.append(helper.make_node("Relu", [prev], [out]))
        elif isinstance(m, nn.AvgPool2d):
            nodes.append(helper.make_node("AveragePool", [prev], [out], kernel_shape=[2, 2],
                                          strides=[2, 2]))  # fmt: skip
        elif isinstance(m, nn.Upsample):
            inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"))
            nodes.append(helper.make_node("Resize", [prev, "", "scales"], [out], mode="linear",
                                          coordinate_transformation_mode="half_pixel"))  # fmt: skip
        else:  # pragma: no cover - finder_network holds nothing else
            raise TypeError(f"no ONNX form for {type(m).__name__}")
        prev = out
    nodes[-1].output[0] = "y"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, "h", "w"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, "h", "w"])
    graph = helper.make_graph(nodes, "lipoclass_finder", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, mtime: float) -> LearnedFinder:
    import torch

    net = finder_network()
    try:
        with np.load(path) as z:
            info = json.loads(str(z["__info__"]))
            state = {k: torch.from_numpy(np.array(z[k])) for k in z.files if k != "__info__"}
        net.load_state_dict(state)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise LipoclassError(f"{path}: not a candidate finder ({exc})") from exc
    net.eval()
    # channels-last convolutions: the same float32 arithmetic (logits within 2e-6), 1.6x
    # faster on the 2-core VM (twenty-third round)
    net = net.to(memory_format=torch.channels_last)
    return LearnedFinder(net, info, OnnxFinder(net, torch.get_num_threads()))


def fused_network(net: Any) -> Any:
    """An inference copy of the eval-mode finder ``net``: each batch norm folded into its
    convolution and the ReLUs in place, channels-last (the same function within float
    rounding, logits within 3e-6; octave 0 of a 2048 px working image 1.5 -> 0.85 s on the
    2-core VM, twenty-fourth round). ``net`` itself stays trainable and savable."""
    import copy

    import torch
    import torch.nn as nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    mods: list[Any] = list(copy.deepcopy(net))
    out: list[Any] = []
    while mods:
        m = mods.pop(0)
        if isinstance(m, nn.Conv2d) and mods and isinstance(mods[0], nn.BatchNorm2d):
            out.append(fuse_conv_bn_eval(m, mods.pop(0)))
        else:
            out.append(nn.ReLU(inplace=True) if isinstance(m, nn.ReLU) else m)
    fused: Any = nn.Sequential(*out).eval()
    return fused.to(memory_format=torch.channels_last)


def load_finder(path: Path | None = None) -> LearnedFinder:
    """The packaged finder (``path`` None) or a finder file (cached while unchanged)."""
    p = DEFAULT_FINDER if path is None else Path(path)
    if not p.is_file():
        raise LipoclassError(f"{p}: candidate finder not found")
    return _load_cached(str(p), p.stat().st_mtime)
