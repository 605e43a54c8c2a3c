"""DCO as its authors train it: on the tiny suite, one DCO training step with the defaults
(`gap: batch`, `reference_prompt: auto`) gives the loss and gradients of a transcription of the
authors' loss lines (kyungmnlee/dco, customize.py at 164ae17, lines 936-941 and 967-976: the
formula, written out here, not their code), and the reference pass is conditioned as their script
conditions it (lines 880-888: the same prompt while the text encoders are frozen; 905-918: the base
prompt when a token trains)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dcobench.config import TrainConfig
from dcobench.families import family_of
from dcobench.methods.dco import DCO, DCOConfig
from dcobench.models.pipeline import Conditioner
from dcobench.trainer import encode_images, train_lora

BETA = 20.0  # so that beta * gap is of order 1 at the recorded step: a saturated sigmoid would match anything


def authors_loss(model_pred, refer_pred, target, beta, mse_loss_weights=None):
    """customize.py 936-941 (no SNR weights) and 967-976 (with them), transcribed."""
    if mse_loss_weights is None:
        loss_model = F.mse_loss(model_pred.float(), target.float(), reduction="mean")
        loss_refer = F.mse_loss(refer_pred.float(), target.float(), reduction="mean")
    else:
        loss_model = F.mse_loss(model_pred.float(), target.float(), reduction="none")
        loss_model = (loss_model.mean(dim=list(range(1, len(loss_model.shape)))) * mse_loss_weights).mean()
        loss_refer = F.mse_loss(refer_pred.float(), target.float(), reduction="none")
        loss_refer = (loss_refer.mean(dim=list(range(1, len(loss_refer.shape)))) * mse_loss_weights).mean()
    diff = loss_model - loss_refer
    inside_term = -1 * beta * diff
    return -1 * torch.nn.LogSigmoid()(inside_term)


def _record_step(pipe, subject, objective, step: int, monkeypatch, snr_gamma=0.0, train_token=False):
    """Train `step + 1` steps; at the last, compare the objective with the transcription on the very
    tensors the trainer passed, by loss and by gradient w.r.t. the prediction and every LoRA weight."""
    out = {}
    calls = {"n": 0}
    original = type(objective).__call__
    lora = [p for n, p in pipe.unet.named_parameters() if "lora_" in n]

    def spy(self, model_pred, target, ref_pred=None, weights=None, prior=None):
        loss, logs = original(self, model_pred, target, ref_pred, weights, prior)
        if calls["n"] == step:
            theirs = authors_loss(model_pred, ref_pred, target, self.cfg.beta, weights)
            params = [p for p in lora if p.requires_grad]
            g_ours = torch.autograd.grad(loss, [model_pred, *params], retain_graph=True)
            g_theirs = torch.autograd.grad(theirs, [model_pred, *params], retain_graph=True)
            out.update(ours=loss.item(), theirs=theirs.item(), g_ours=g_ours, g_theirs=g_theirs,
                       gap=(per(model_pred, target) - per(ref_pred, target)).detach())
        calls["n"] += 1
        return loss, logs

    monkeypatch.setattr(type(objective), "__call__", spy)
    cond = Conditioner(pipe, 32)
    latents = encode_images(pipe.vae, subject.images, 32)
    cfg = TrainConfig(steps=step + 1, lr=1e-2, rank=4, alpha=4.0, resolution=32, snr_gamma=snr_gamma, batch_size=4,
                      train_token=train_token)
    train_lora(pipe, cond, latents, subject, objective, cfg, 0)
    return out


def per(pred, target):
    return (pred.float() - target.float()).pow(2).mean(dim=tuple(range(1, pred.ndim)))


def _close(out) -> bool:
    return math.isclose(out["ours"], out["theirs"], rel_tol=1e-6, abs_tol=1e-9) and all(
        torch.allclose(a, b, rtol=1e-5, atol=1e-10) for a, b in zip(out["g_ours"], out["g_theirs"]))


@pytest.mark.parametrize("snr_gamma", [0.0, 5.0], ids=["plain", "min-snr"])
def test_default_dco_step_matches_the_authors_loss(tiny_pipe, tiny_suite, monkeypatch, snr_gamma):
    objective = DCO(DCOConfig(beta=BETA))
    assert (objective.cfg.gap, objective.cfg.reference_prompt) == ("batch", "auto")
    out = _record_step(tiny_pipe, tiny_suite.subjects[0], objective, 2, monkeypatch, snr_gamma)
    beta_gap = BETA * out["gap"]
    assert out["gap"].std() > 0 and 0.05 < beta_gap.abs().mean() < 5, beta_gap  # gaps that differ, unsaturated
    assert _close(out), (out["ours"], out["theirs"])


def test_per_sample_gap_is_another_loss(tiny_pipe, tiny_suite, monkeypatch):
    """The check can fail: dcobench's earlier rule (a sigmoid per sample) is not the authors' loss."""
    out = _record_step(tiny_pipe, tiny_suite.subjects[0], DCO(DCOConfig(beta=BETA, gap="sample")), 2, monkeypatch)
    assert not _close(out)


def _reference_conditioning(pipe, subject, objective, monkeypatch, train_token: bool):
    seen = []
    family = family_of(pipe)
    original = family.forward

    def spy(unet, x, t, cond):
        seen.append(cond["encoder_hidden_states"].detach().clone())
        return original(unet, x, t, cond)

    monkeypatch.setattr(family, "forward", spy)
    cond = Conditioner(pipe, 32)
    cfg = TrainConfig(steps=1, lr=1e-3, rank=4, alpha=4.0, resolution=32, train_token=train_token)
    report = train_lora(pipe, cond, encode_images(pipe.vae, subject.images, 32), subject, objective, cfg, 0)
    return seen, report


def test_auto_reference_is_the_same_caption_without_a_token(tiny_pipe, tiny_suite, monkeypatch):
    (theta_c, phi_c), report = _reference_conditioning(tiny_pipe, tiny_suite.subjects[0], DCO(), monkeypatch, False)
    assert torch.equal(theta_c, phi_c)
    assert report.losses[0] == pytest.approx(math.log(2), abs=1e-6)  # LoRA B = 0 and the same prompt: log 2


def test_auto_reference_is_the_base_caption_when_a_token_trains(tiny_pipe, tiny_suite, monkeypatch):
    subject = tiny_suite.subjects[0]
    (theta_c, phi_c), _ = _reference_conditioning(tiny_pipe, subject, DCO(), monkeypatch, True)
    assert not torch.equal(theta_c, phi_c)
    base = Conditioner(tiny_pipe, 32)(subject.base_captions)["encoder_hidden_states"]
    assert all(any(torch.equal(row, b) for b in base) for row in phi_c)
