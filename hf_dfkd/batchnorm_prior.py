"""The batch-norm statistics prior of a frozen convolutional teacher, read with forward hooks.

A CNN (such as DETR's ResNet backbone) stores, in every batch-norm layer, the running mean and variance of that
layer's input over its training data. :class:`BatchNormStatistics` records the same statistics for the images
currently going through the teacher, so that a generator can be asked to match them
(:func:`~hf_dfkd.losses.batchnorm_statistics_loss`): data-free, yet pulled towards the training images' features.
"""

from __future__ import annotations

import torch
from torch import nn

from .losses import batchnorm_statistics_loss

__all__ = ["BatchNormStatistics", "batchnorm_layers"]


def batchnorm_layers(model: nn.Module) -> list[nn.Module]:
    """Every batch-norm layer with running statistics in ``model``, in forward order of registration.

    Matches ``nn.BatchNorm2d`` and the frozen variants models keep for pretrained backbones (transformers'
    ``DetrFrozenBatchNorm2d``, torchvision's ``FrozenBatchNorm2d``): any module whose class name contains
    "BatchNorm" and that holds ``running_mean`` and ``running_var`` tensors.
    """
    return [m for m in model.modules() if "BatchNorm" in type(m).__name__
            and isinstance(getattr(m, "running_mean", None), torch.Tensor)
            and isinstance(getattr(m, "running_var", None), torch.Tensor)]


class BatchNormStatistics:
    """Forward hooks on every batch-norm layer of ``model`` that keep the last forward pass's input statistics.

    ``loss()`` compares them with the layers' running statistics; gradients flow back to the images. Use as a
    context manager (or call :meth:`remove`) so the hooks do not outlive the training that needs them.

    Raises:
        ValueError: the model has no batch-norm layer (a ViT, for example): the prior does not apply to it.
    """

    def __init__(self, model: nn.Module):
        self.layers = batchnorm_layers(model)
        if not self.layers:
            raise ValueError(f"{type(model).__name__} has no batch-norm layer with running statistics, so there is "
                             "no batch-norm prior to match (a ViT has none): set lambda_bn=0")
        self._stats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._handles = [layer.register_forward_pre_hook(self._hook(i)) for i, layer in enumerate(self.layers)]

    def _hook(self, index: int):
        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0].float()
            dims = [d for d in range(x.dim()) if d != 1]  # all but the channel axis
            self._stats[index] = (x.mean(dims), x.var(dims, unbiased=False))
        return record

    def loss(self) -> torch.Tensor:
        """:func:`~hf_dfkd.losses.batchnorm_statistics_loss` of the last forward pass, summed over the layers."""
        if len(self._stats) != len(self.layers):
            raise RuntimeError(f"{len(self._stats)} of {len(self.layers)} batch-norm layers saw an input: run the "
                               "model forward on the images first")
        means, variances = zip(*(self._stats[i] for i in range(len(self.layers))))
        return batchnorm_statistics_loss(means, variances, [m.running_mean for m in self.layers],
                                         [m.running_var for m in self.layers])

    def clear(self) -> None:
        """Forget the recorded statistics (and the graph they hold)."""
        self._stats.clear()

    def remove(self) -> None:
        """Remove the hooks and forget the statistics."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.clear()

    def __enter__(self) -> "BatchNormStatistics":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
