"""The objectives against values computed by hand, and the shape of their gradients."""

import math

import pytest
import torch

from baselines.dreambooth import DreamBooth
from dcobench.methods.dco import DCO, DCOConfig


def t(*values):
    return torch.tensor(values, dtype=torch.float32).view(len(values), 1, 1, 1)


def test_dreambooth_is_plain_mse():
    loss, logs = DreamBooth()(t(0.3, -1.0), t(0.0, 1.0))
    assert loss.item() == pytest.approx((0.09 + 4.0) / 2)
    assert logs["mse"] == pytest.approx(2.045)


def test_dco_matches_hand_computation():
    beta = 10.0
    pred, target, ref = t(0.3, 0.0), t(0.0, 0.5), t(0.2, 0.1)
    # sample 0: model mse 0.09, ref mse 0.04 -> diff 0.05; sample 1: 0.25 vs 0.16 -> 0.09
    expected = (math.log1p(math.exp(beta * 0.05)) + math.log1p(math.exp(beta * 0.09))) / 2
    loss, logs = DCO(DCOConfig(beta=beta, gap="sample"))(pred, target, ref)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert logs["implicit_acc"] == 0.0
    # the default, the authors' rule: one sigmoid of the batch-mean gap (0.125 - 0.1 = 0.07)
    loss, _ = DCO(DCOConfig(beta=beta))(pred, target, ref)
    assert loss.item() == pytest.approx(math.log1p(math.exp(beta * 0.07)), rel=1e-5)


def test_dco_is_log2_when_model_equals_reference():
    x = torch.randn(4, 4, 8, 8)
    target = torch.randn_like(x)
    loss, _ = DCO()(x, target, x.clone())
    assert loss.item() == pytest.approx(math.log(2), abs=1e-7)


def test_dco_default_beta_is_1000():
    assert DCOConfig().beta == 1000.0


def test_dco_needs_reference():
    assert DCO.needs_reference and not DreamBooth.needs_reference
    with pytest.raises(ValueError):
        DCO()(t(0.1), t(0.0), None)


def grad_norm(objective, pred, target, ref):
    pred = pred.clone().requires_grad_(True)
    loss, _ = objective(pred, target, ref)
    loss.backward()
    return pred.grad.norm().item()


def test_dco_gradient_vanishes_once_model_beats_reference_but_dreambooth_does_not():
    torch.manual_seed(0)
    target = torch.randn(2, 4, 8, 8)
    pred = target + 0.1 * torch.randn_like(target)  # the fine-tuned model's error stays fixed
    dco, db = DCO(DCOConfig(beta=1000.0)), DreamBooth()
    direction = torch.randn_like(target)
    dco_norms, db_norms = [], []
    for ref_noise in (0.1, 0.102, 0.105, 0.11, 0.2, 1.0):  # the reference's error grows far above the model's
        ref = target + ref_noise * direction
        dco_norms.append(grad_norm(dco, pred, target, ref))
        db_norms.append(grad_norm(db, pred, target, ref))
    assert dco_norms[-1] < 1e-6 * dco_norms[0]
    assert all(a >= b for a, b in zip(dco_norms, dco_norms[1:]))
    assert dco_norms[0] > 1.0  # at equal errors DCO pushes hard (beta * 1/2 * DreamBooth's gradient)
    assert db_norms[-1] == pytest.approx(db_norms[0])
    assert db_norms[-1] > 1e-3
