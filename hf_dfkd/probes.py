"""Attention probes of vision transformers.

Two probes, both computed without ``output_attentions=True`` so that models keep their fast sdpa attention:

* the **patch attention probe** of the distillation loss: cosine similarity between the CLS token and every patch
  token of one layer's hidden states (:func:`patch_attention_probe`);
* the **CLS attention probe** of the generator: the CLS row of one layer's attention map over the patch tokens,
  ``softmax(q_cls · Kᵀ / sqrt(d))[prefix:]``, computed from the layer's query/key projections by forward hooks
  (:class:`CLSAttentionProbe`), so the ``N × N`` map is never built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "UnsupportedModelError",
    "CLSAttentionProbe",
    "default_layer_pairs",
    "get_encoder_layers",
    "interpolate_probes",
    "num_prefix_tokens",
    "parse_layer_pairs",
    "patch_attention_probe",
    "patch_grid",
    "patch_probes_from_hidden_states",
]

# model_type -> number of tokens before the patch tokens (CLS first; DeiT adds a distillation token at index 1)
_PREFIX_TOKENS = {"vit": 1, "deit": 2}
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(_PREFIX_TOKENS)

HeadReduction = Literal["mean", "max", "none"]


class UnsupportedModelError(ValueError):
    """The model has no CLS token / patch grid that the probes know how to read."""


def _config_of(model_or_config: PreTrainedModel | PretrainedConfig | nn.Module) -> PretrainedConfig | None:
    if isinstance(model_or_config, PretrainedConfig):
        return model_or_config
    return getattr(model_or_config, "config", None)


def _check_supported(model_or_config, what: str) -> PretrainedConfig:
    config = _config_of(model_or_config)
    model_type = getattr(config, "model_type", None)
    if model_type not in _PREFIX_TOKENS:
        hint = ""
        if model_type == "timm_wrapper":
            hint = " timm models work for logits-only distillation: set lambda_patch=0."
        raise UnsupportedModelError(
            f"{what} needs a transformers ViT-family model with a CLS token; got model_type={model_type!r} "
            f"({type(model_or_config).__name__}). Supported model types: {', '.join(SUPPORTED_MODEL_TYPES)}.{hint}"
        )
    return config


def num_prefix_tokens(model_or_config) -> int:
    """Number of tokens before the first patch token (ViT: 1 for CLS; DeiT: 2, CLS and distillation)."""
    return _PREFIX_TOKENS[_check_supported(model_or_config, "A patch probe").model_type]


def _pair(value) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def patch_grid(model_or_config) -> tuple[int, int]:
    """``(rows, cols)`` of the patch grid from ``image_size`` and ``patch_size`` in the config."""
    config = _check_supported(model_or_config, "A patch probe")
    (h, w), (ph, pw) = _pair(config.image_size), _pair(config.patch_size)
    return h // ph, w // pw


def get_encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks of a supported ViT-family model (``ForImageClassification`` or base)."""
    _check_supported(model, "The CLS attention probe")
    base = getattr(model, "base_model", model)
    for name in ("layers", "encoder.layer", "encoder.layers"):
        module = base
        for part in name.split("."):
            module = getattr(module, part, None)
        if isinstance(module, nn.ModuleList):
            return module
    raise UnsupportedModelError(f"could not find the transformer blocks of {type(model).__name__}")


def patch_attention_probe(hidden_state: torch.Tensor, num_prefix_tokens: int) -> torch.Tensor:
    r"""Patch attention probe of one layer: ``a_p = cos(h_CLS, h_p)`` for every patch token ``p``.

    Args:
        hidden_state: ``(B, N, D)`` hidden states of one layer, CLS token first.
        num_prefix_tokens: tokens before the first patch token (skipped, e.g. DeiT's distillation token).

    Returns:
        ``(B, N - num_prefix_tokens)`` cosine similarities, independent of the hidden width ``D``.
    """
    h = F.normalize(hidden_state.float(), dim=-1)
    return torch.einsum("bd,bpd->bp", h[:, 0], h[:, num_prefix_tokens:])


def patch_probes_from_hidden_states(
    hidden_states: Sequence[torch.Tensor], layers: Sequence[int], num_prefix_tokens: int
) -> torch.Tensor:
    """Stack :func:`patch_attention_probe` over chosen layers into ``(B, len(layers), P)``.

    ``layers`` index ``hidden_states`` as returned with ``output_hidden_states=True``: 0 is the embedding output and
    ``l`` (1-based) the output of block ``l``.
    """
    return torch.stack([patch_attention_probe(hidden_states[l], num_prefix_tokens) for l in layers], dim=1)


def interpolate_probes(probes: torch.Tensor, from_grid: tuple[int, int], to_grid: tuple[int, int]) -> torch.Tensor:
    """Resize ``(B, L, P)`` probe vectors laid on ``from_grid`` to ``to_grid`` (bilinear, on the patch grid)."""
    if tuple(from_grid) == tuple(to_grid):
        return probes
    b, l, p = probes.shape
    if p != from_grid[0] * from_grid[1]:
        raise ValueError(f"probes have {p} patches, not the {from_grid[0]}x{from_grid[1]} grid they were said to have")
    grid = probes.float().reshape(b * l, 1, *from_grid)
    out = F.interpolate(grid, size=tuple(to_grid), mode="bilinear", align_corners=False)
    return out.reshape(b, l, to_grid[0] * to_grid[1])


def parse_layer_pairs(pairs: Sequence[str | tuple[int, int]]) -> list[tuple[int, int]]:
    """Parse ``["1:2", "2:4"]`` (student layer : teacher layer, 1-based block numbers) or tuples into pairs."""
    parsed = []
    for pair in pairs:
        if isinstance(pair, str):
            try:
                s, t = (int(x) for x in pair.split(":"))
            except ValueError:
                raise ValueError(f"layer pair {pair!r} is not of the form 'STUDENT:TEACHER', e.g. '3:6'") from None
        else:
            s, t = (int(x) for x in pair)
        parsed.append((s, t))
    return parsed


def default_layer_pairs(num_student_layers: int, num_teacher_layers: int) -> list[tuple[int, int]]:
    """Evenly spaced (student, teacher) block pairs with the last blocks aligned.

    ``min(Ls, Lt)`` pairs: pair ``k`` matches student block ``round(k·Ls/n)`` with teacher block ``round(k·Lt/n)``,
    e.g. a 3-block student and a 6-block teacher give ``[(1, 2), (2, 4), (3, 6)]``.
    """
    n = min(num_student_layers, num_teacher_layers)
    return [
        (int(k * num_student_layers / n + 0.5), int(k * num_teacher_layers / n + 0.5)) for k in range(1, n + 1)
    ]


class _ProbeComplete(Exception):
    """Raised by a hook to end a forward pass once every probed layer's keys are known."""


class CLSAttentionProbe:
    """CLS-row attention probe read from a layer's query/key projections by forward hooks.

    For layer ``l`` it computes ``A_l[:, h, 0, prefix:] = softmax(q_cls · Kᵀ · d^-1/2)[prefix:]`` from the outputs of
    the layer's ``q_proj``/``k_proj``, which equals the eager ``attentions[l][:, :, 0, prefix:]`` while the model
    runs with sdpa (or any other attention kernel) and never materialises the ``N × N`` map. Gradients flow
    through the probe into the model's input, as the generator's attention loss needs.

    Example::

        probe = CLSAttentionProbe(teacher)           # last layer, mean over heads
        with probe:
            logits = teacher(pixel_values=x).logits
        ap = probe.probe                               # (B, num_patches)

    Args:
        model: a transformers ViT or DeiT (``*ForImageClassification`` or base model).
        layer: block index (negative counts from the end) or several indices, whose probes are averaged.
        head_reduction: ``"mean"`` or ``"max"`` over heads, or ``"none"`` to keep ``(B, heads, P)``.
    """

    def __init__(self, model: nn.Module, layer: int | Sequence[int] = -1, head_reduction: HeadReduction = "mean"):
        blocks = get_encoder_layers(model)
        self.model = model
        self.num_prefix_tokens = num_prefix_tokens(model)
        layers = [layer] if isinstance(layer, int) else list(layer)
        if not layers:
            raise ValueError("CLSAttentionProbe needs at least one layer")
        for idx in layers:
            if not -len(blocks) <= idx < len(blocks):
                raise ValueError(f"layer {idx} is out of range for a model with {len(blocks)} blocks")
        if head_reduction not in ("mean", "max", "none"):
            raise ValueError(f"head_reduction must be 'mean', 'max' or 'none', got {head_reduction!r}")
        self.layers = [idx % len(blocks) for idx in layers]
        self.head_reduction = head_reduction
        self._attentions = []
        for idx in self.layers:
            attn = blocks[idx].attention
            if not all(hasattr(attn, a) for a in ("q_proj", "k_proj", "head_dim", "scaling")):
                raise UnsupportedModelError(
                    f"block {idx} of {type(model).__name__} has no q_proj/k_proj projections to hook; supported model "
                    f"types: {', '.join(SUPPORTED_MODEL_TYPES)}"
                )
            self._attentions.append(attn)
        self._handles: list = []
        self._q: dict[int, torch.Tensor] = {}
        self._k: dict[int, torch.Tensor] = {}

    def __enter__(self) -> CLSAttentionProbe:
        self.attach()
        return self

    def __exit__(self, *exc) -> None:
        self.detach()

    def attach(self, stop_early: bool = False) -> None:
        """Register the hooks (``with probe:`` does this for you).

        With ``stop_early`` the forward pass is cut short (see :meth:`probe_only`) once the deepest probed layer's
        keys are captured.
        """
        self.detach()
        self._q.clear()
        self._k.clear()
        last = len(self._attentions) - 1 if not stop_early else max(range(len(self.layers)), key=self.layers.__getitem__)

        def keep_keys(i, out):
            self._k[i] = out
            if stop_early and i == last and len(self._k) == len(self._attentions):
                raise _ProbeComplete

        for i, attn in enumerate(self._attentions):
            # only the CLS query is kept: the one row of the attention map we need
            self._handles.append(attn.q_proj.register_forward_hook(lambda m, a, out, i=i: self._q.__setitem__(i, out[:, 0])))
            self._handles.append(attn.k_proj.register_forward_hook(lambda m, a, out, i=i: keep_keys(i, out)))

    def detach(self) -> None:
        """Remove the hooks and drop the captured tensors."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @property
    def probe(self) -> torch.Tensor:
        """The probe of the last forward pass: ``(B, P)``, or ``(B, heads, P)`` with ``head_reduction="none"``."""
        if len(self._k) != len(self._attentions):
            raise RuntimeError("no forward pass was captured: run the model inside `with probe:` first")
        probes = []
        for i, attn in enumerate(self._attentions):
            q_cls, k = self._q[i], self._k[i]
            b, n, _ = k.shape
            q_cls = q_cls.reshape(b, -1, attn.head_dim).float()
            k = k.reshape(b, n, -1, attn.head_dim).float()
            scores = torch.einsum("bhd,bnhd->bhn", q_cls, k) * attn.scaling
            probes.append(scores.softmax(dim=-1)[..., self.num_prefix_tokens :])
        row = torch.stack(probes).mean(dim=0)
        if self.head_reduction == "mean":
            return row.mean(dim=1)
        if self.head_reduction == "max":
            return row.amax(dim=1)
        return row

    def probe_only(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The probe of ``pixel_values``, running the model only up to the deepest probed layer's key projection.

        Skips the rest of that block, any later block and the head (and their backward pass): the cheapest way to
        get a differentiable probe when the logits are not needed, e.g. in the generator's attention loss.
        """
        self.attach(stop_early=True)
        try:
            self.model(pixel_values=pixel_values)
        except _ProbeComplete:
            pass
        finally:
            self.detach()
        return self.probe

    def __call__(self, pixel_values: torch.Tensor, **kwargs):
        """Run the model on ``pixel_values`` with the hooks attached; returns ``(probe, outputs)``."""
        with self:
            outputs = self.model(pixel_values=pixel_values, **kwargs)
            return self.probe, outputs

