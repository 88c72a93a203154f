"""The batch-norm statistics prior: the pure loss and the hooks that read it from a frozen CNN."""

import pytest
import torch
from torch import nn

from hf_dfkd.batchnorm_prior import BatchNormStatistics, batchnorm_layers
from hf_dfkd.losses import batchnorm_statistics_loss


def test_loss_is_the_sum_of_mean_and_variance_distances_over_layers():
    means, variances = [torch.tensor([1.0, 2.0]), torch.zeros(3)], [torch.ones(2), torch.ones(3)]
    running_means, running_vars = [torch.tensor([1.0, 2.0]), torch.zeros(3)], [torch.ones(2), torch.ones(3)]
    assert batchnorm_statistics_loss(means, variances, running_means, running_vars).item() == 0.0
    shifted = [torch.tensor([4.0, 6.0]), torch.zeros(3)]  # ||(3, 4)|| = 5
    doubled = [torch.ones(2), torch.full((3,), 3.0)]  # ||(2, 2, 2)|| = sqrt(12)
    torch.testing.assert_close(batchnorm_statistics_loss(shifted, doubled, running_means, running_vars),
                               torch.tensor(5.0 + 12 ** 0.5))
    with pytest.raises(ValueError, match="one mean and variance per layer"):
        batchnorm_statistics_loss(means[:1], variances, running_means, running_vars)
    with pytest.raises(ValueError, match="differ"):
        batchnorm_statistics_loss([torch.zeros(5), means[1]], variances, running_means, running_vars)
    with pytest.raises(ValueError, match="no batch-norm layer"):
        batchnorm_statistics_loss([], [], [], [])


def _cnn():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 6, 3), nn.BatchNorm2d(6))
    with torch.no_grad():
        for bn in (model[1], model[4]):
            bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2)
    return model.eval().requires_grad_(False)


def test_hooks_record_the_input_statistics_of_every_batch_norm_and_pass_gradients_to_the_images():
    model = _cnn()
    images = torch.randn(5, 3, 8, 8, requires_grad=True)
    with BatchNormStatistics(model) as prior:
        assert prior.layers == [model[1], model[4]]
        model(images)
        loss = prior.loss()
        first, second = model[0](images), model[3](model[2](model[1](model[0](images))))
        expected = batchnorm_statistics_loss(
            [first.mean((0, 2, 3)), second.mean((0, 2, 3))],
            [first.var((0, 2, 3), unbiased=False), second.var((0, 2, 3), unbiased=False)],
            [model[1].running_mean, model[4].running_mean], [model[1].running_var, model[4].running_var])
        torch.testing.assert_close(loss, expected)
        loss.backward()
        assert images.grad.abs().sum() > 0
        prior.clear()
        with pytest.raises(RuntimeError, match="run the model forward"):
            prior.loss()
    assert all(not bn._forward_pre_hooks for bn in batchnorm_layers(model))  # removed on exit


def test_frozen_batch_norms_count_and_a_model_without_any_is_refused():
    from transformers.models.detr.modeling_detr import DetrFrozenBatchNorm2d

    assert batchnorm_layers(nn.Sequential(nn.Conv2d(3, 4, 1), DetrFrozenBatchNorm2d(4)))[0].running_var.numel() == 4
    with pytest.raises(ValueError, match="set lambda_bn=0"):
        BatchNormStatistics(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)))
