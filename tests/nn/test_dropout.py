"""graphsys.nn's Dropout: nn.Dropout's meaning (each element kept with probability
1 - p, scaled by 1 / (1 - p)), its gradient, repeatability under torch.manual_seed."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from graphsys.nn._dropout import MIN_ELEMENTS, Dropout, dropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.6, 0.9])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_keeps_each_element_with_probability_one_minus_p(p: float, dtype) -> None:
    x = torch.rand(1000, 1000, dtype=dtype) + 0.5  # no zeros: a zero output is a drop
    y = dropout(x, p)
    kept = y != 0
    n = x.numel()
    # binomial: within 6 standard deviations of (1 - p) n
    assert abs(int(kept.sum()) - (1 - p) * n) < 6 * math.sqrt(p * (1 - p) * n)
    # scaled as torch's dropout scales: times 1 / (1 - p) rounded to the dtype
    scale = torch.tensor(1 / (1 - p), dtype=dtype)
    torch.testing.assert_close(y[kept], x[kept] * scale, rtol=0, atol=0)
    # independent of position: both halves and both parities keep about as many
    for part in (kept[:500], kept[500:], kept.view(-1)[::2], kept.view(-1)[1::2]):
        m = part.numel()
        assert abs(int(part.sum()) - (1 - p) * m) < 6 * math.sqrt(p * (1 - p) * m)


def test_gradient_is_the_same_mask_scaled() -> None:
    x = (torch.rand(300, 200) + 0.5).requires_grad_()
    w = torch.randn(300, 200)
    y = dropout(x, 0.4)
    (y * w).sum().backward()
    mask = (y != 0).to(x.dtype)
    torch.testing.assert_close(x.grad, w * mask * torch.tensor(1 / 0.6), rtol=0, atol=0)


def test_repeatable_under_manual_seed_and_fresh_per_call() -> None:
    x = torch.rand(400, 400) + 0.5
    torch.manual_seed(3)
    a, b = dropout(x, 0.5), dropout(x, 0.5)
    torch.manual_seed(3)
    assert torch.equal(dropout(x, 0.5), a)
    assert not torch.equal(a, b)


def test_module_is_nn_dropout_and_falls_back() -> None:
    m = Dropout(0.3)
    assert isinstance(m, nn.Dropout) and repr(m) == repr(nn.Dropout(0.3))
    assert m.state_dict() == {}
    x = torch.rand(500, 500)
    m.eval()
    assert m(x) is x
    m.train()
    small = torch.rand(10, 10) + 0.5  # below MIN_ELEMENTS: torch's own path
    assert small.numel() < MIN_ELEMENTS
    ys = m(small)
    assert bool(((ys == 0) | torch.isclose(ys, small / 0.7)).all())
    half = torch.rand(500, 500, dtype=torch.float16) + 0.5  # torch's path: other dtypes
    yh = m(half)
    assert yh.dtype == torch.float16 and bool(((yh == 0) | (yh > 0)).all())
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    assert dropout(x, 0.0) is x
