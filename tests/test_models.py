"""CNN registry: names, shapes per architecture, errors, one optimisation step."""

from __future__ import annotations

import pytest
import torch

from lipoclass.errors import LipoclassError
from lipoclass.models import (
    AUX_FEATURES,
    create_model,
    default_input_size,
    list_models,
    register_model,
    size_features,
)

NAMES = ["lipnet1", "lipnet2", "lipnet4", "lipnet4c", "lipnet6", "lipnet_fcn", "lipnet_hybrid",
         "tiny"]  # fmt: skip


def _run(m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    if getattr(m, "needs_aux", False):
        return m(x, torch.ones(len(x), len(AUX_FEATURES)))
    return m(x)


def test_registry_lists_all_models() -> None:
    assert set(NAMES) <= set(list_models())
    assert default_input_size("lipnet4") == 28
    assert default_input_size("lipnet6") == 32


@pytest.mark.parametrize("name", NAMES)
def test_output_shape_at_default_size(name: str) -> None:
    s = default_input_size(name)
    m = create_model(name, 3).eval()
    x = torch.randn(5, 1, s, s)
    out = _run(m, x)
    assert out.shape == (5, 3) and out.dtype == torch.float32
    f = m.forward_features(x)
    assert f.ndim == 4 and f.shape[0] == 5
    head = m.forward_head(f, torch.ones(5, 5)) if m.needs_aux else m.forward_head(f)
    torch.testing.assert_close(head, out)
    assert m.lipo_config == {"name": name, "num_classes": 3, "in_size": s}


def test_lipnet4_matches_keras_layout() -> None:
    m = create_model("lipnet4", 3)
    convs = [c for c in m.modules() if isinstance(c, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (1, 32, (3, 3), (1, 1)), (32, 32, (3, 3), (1, 1)),
        (32, 32, (3, 3), (1, 1)), (32, 32, (3, 3), (1, 1)),
    ]  # fmt: skip
    dense = [c for c in m.modules() if isinstance(c, torch.nn.Linear)]
    assert [(d.in_features, d.out_features) for d in dense] == [(32 * 7 * 7, 128), (128, 3)]
    # Keras model in shared/bench: same parameter count (conv 320 + 3x9248, dense 200832 + 387)
    assert sum(p.numel() for p in m.parameters()) == 320 + 3 * 9248 + 200832 + 387


@pytest.mark.parametrize("size", [12, 28, 37, 64])
def test_fcn_accepts_several_sizes(size: int) -> None:
    m = create_model("lipnet_fcn", 4).eval()
    assert m(torch.randn(2, 1, size, size)).shape == (2, 4)


def test_fixed_size_model_built_for_other_size() -> None:
    assert create_model("lipnet4", 2, in_size=40)(torch.randn(1, 1, 40, 40)).shape == (1, 2)


def test_unknown_name_lists_choices() -> None:
    with pytest.raises(LipoclassError, match="lipnet4"):
        create_model("resnet9000", 3)


def test_too_small_input_rejected() -> None:
    with pytest.raises(LipoclassError, match="too small"):
        create_model("lipnet6", 3, in_size=4)


def test_register_duplicate_name_rejected() -> None:
    with pytest.raises(ValueError):
        register_model("tiny")(lambda num_classes, in_size: torch.nn.Identity())


def test_hybrid_needs_aux() -> None:
    m = create_model("lipnet_hybrid", 3).eval()
    with pytest.raises(LipoclassError, match="aux"):
        m(torch.randn(1, 1, 28, 28))


def test_size_features() -> None:
    import numpy as np

    meta = np.array([[40, 30, 20, 10, 150.0, 0.5], [40, 30, 20, 10, 150.0, np.nan]])
    f = size_features(meta)
    assert f.shape == (2, len(AUX_FEATURES)) and f.dtype == np.float32
    np.testing.assert_allclose(f[0, :3], np.log([20, 10, 150]), rtol=1e-6)
    np.testing.assert_allclose(f[0, 3], np.log(2 * np.sqrt(150 / np.pi) * 0.5), rtol=1e-6)
    assert f[0, 4] == 1 and f[1, 4] == 0 and f[1, 3] == 0


@pytest.mark.parametrize("name", ["lipnet4", "lipnet4c", "lipnet_fcn", "tiny"])
def test_one_step_lowers_loss(name: str) -> None:
    g = torch.Generator().manual_seed(0)
    s = default_input_size(name)
    x = torch.randn(16, 1, s, s, generator=g)
    y = torch.arange(16) % 3
    m = create_model(name, 3).eval()  # eval: no dropout, so the two losses are comparable
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    loss_fn = torch.nn.CrossEntropyLoss()
    before = loss_fn(m(x), y)
    opt.zero_grad()
    before.backward()
    opt.step()
    with torch.no_grad():
        after = loss_fn(m(x), y)
    assert after.item() < before.item()


@pytest.mark.parametrize("p", [0.25, 0.5, 0.1])
def test_fast_dropout_keeps_the_right_share_and_scales(p: float) -> None:
    """The 16-bit-uniform dropout keeps ~(1 - p) of the elements, scales them by 1/(1 - p),
    passes the gradient through the same mask, keeps channels_last strides and is the
    identity in eval mode."""
    from lipoclass.models.layers import Dropout

    drop = Dropout(p)
    x = torch.ones(64, 32, 14, 14).contiguous(memory_format=torch.channels_last).requires_grad_()
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(3)
    y = drop(x)
    torch.random.set_rng_state(gen_state)
    kept = (y != 0).double().mean().item()
    assert abs(kept - (1 - p)) < 0.01
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / (1 - p)))
    assert y.is_contiguous(memory_format=torch.channels_last)
    y.sum().backward()
    assert x.grad is not None and torch.equal(x.grad, y.detach())
    drop.eval()
    assert drop(x) is x


def test_pool_before_relu_is_the_same_network() -> None:
    """LipNet blocks pool before their last ReLU; relu(max) == max(relu), so outputs and
    gradients equal those of conv -> ReLU -> pool."""
    from torch import nn

    torch.manual_seed(0)
    model = create_model("lipnet4", 3).eval()
    x = torch.randn(8, 1, 28, 28)
    ref = x
    for block in model.features:  # rebuild each block in the textbook order
        mods = [m for m in block if not isinstance(m, nn.Dropout)]
        convs = [m for m in mods if isinstance(m, nn.Conv2d)]
        for conv in convs:
            ref = torch.relu(conv(ref))
        ref = nn.functional.max_pool2d(ref, 2)
    assert torch.allclose(model.forward_features(x), ref, atol=1e-6)
