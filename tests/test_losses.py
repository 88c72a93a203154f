import math

import pytest
import torch

from hf_dfkd import ce_loss, kd_loss, patch_probe_loss, total_distillation_loss


@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0])
def test_kd_loss_equals_formula(temperature):
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g) * 3
    p = torch.softmax(s / temperature, -1)
    q = torch.softmax(t / temperature, -1)
    expected = temperature**2 / 5 * (q * (q.log() - p.log())).sum()
    assert torch.allclose(kd_loss(s, t, temperature), expected, atol=1e-6)


def test_kd_loss_scales_with_t_squared_and_batch_mean():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    kl_t2 = kd_loss(s, t, 2.0) / 4.0
    manual = torch.nn.functional.kl_div(
        torch.log_softmax(s / 2, -1), torch.softmax(t / 2, -1), reduction="sum"
    ) / 3
    assert torch.allclose(kl_t2, manual, atol=1e-6)
    # batch mean: duplicating the batch leaves the loss unchanged
    assert torch.allclose(kd_loss(torch.cat([s, s]), torch.cat([t, t]), 2.0), kd_loss(s, t, 2.0), atol=1e-6)
    assert kd_loss(s, s, 3.0).abs() < 1e-6


def test_kd_loss_rejects_bad_temperature_and_shapes():
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), 0.0)
    with pytest.raises(ValueError, match="label set"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 4), 1.0)


def test_ce_loss_equals_formula():
    g = torch.Generator().manual_seed(2)
    s = torch.randn(6, 5, generator=g)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    expected = -torch.log_softmax(s, -1)[torch.arange(6), y].mean()
    assert torch.allclose(ce_loss(s, y), expected, atol=1e-6)


def test_patch_probe_loss_is_mean_squared_difference():
    g = torch.Generator().manual_seed(3)
    a, b = torch.rand(2, 3, 16, generator=g), torch.rand(2, 3, 16, generator=g)
    assert torch.allclose(patch_probe_loss(a, b), ((a - b) ** 2).sum() / (2 * 3 * 16), atol=1e-7)
    assert patch_probe_loss(a, a) == 0
    with pytest.raises(ValueError, match="patch grid"):
        patch_probe_loss(a, b[..., :9])


def test_total_loss_weights():
    kd, ce, patch = torch.tensor(2.0), torch.tensor(3.0), torch.tensor(5.0)
    assert math.isclose(total_distillation_loss(kd, ce, patch, 0.5, 2.0, 10.0).item(), 1 + 6 + 50)
    assert math.isclose(total_distillation_loss(kd, ce, None, 1.0, 1.0, 10.0).item(), 5.0)


def test_mode_seeking_loss_equals_formula_and_punishes_collapse():
    from hf_dfkd.losses import mode_seeking_loss

    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(6, 1, 8, 8, generator=g), torch.randn(6, 1, 8, 8, generator=g)
    za, zb = torch.randn(6, 16, generator=g), torch.randn(6, 16, generator=g)
    expected = 1 / ((a - b).abs().mean() / (za - zb).abs().mean() + 1e-5)
    assert torch.allclose(mode_seeking_loss(a, b, za, zb), expected)
    # one image per class whatever the latent (mode collapse) is what the loss is there to prevent
    assert mode_seeking_loss(a, a.clone(), za, zb) > 1e4 > mode_seeking_loss(a, b, za, zb)
