import pytest
import torch
from conftest import tiny_vit

from hf_dfkd import CLSAttentionProbe, UnsupportedModelError, default_layer_pairs, patch_probe_loss
from hf_dfkd.probes import (
    interpolate_probes,
    num_prefix_tokens,
    parse_layer_pairs,
    patch_attention_probe,
    patch_grid,
    patch_probes_from_hidden_states,
)


def eager_cls_rows(model, x):
    """Reference: the eager attention maps' CLS row over patch tokens, per layer, (L, B, heads, P)."""
    model.set_attn_implementation("eager")
    try:
        out = model(pixel_values=x, output_attentions=True)
    finally:
        model.set_attn_implementation("sdpa")
    prefix = num_prefix_tokens(model)
    return torch.stack([a[:, :, 0, prefix:] for a in out.attentions])


@pytest.mark.parametrize("deit", [False, True])
def test_hooked_cls_probe_equals_eager_attentions(deit):
    model = tiny_vit(hidden=48, layers=3, heads=3, deit=deit).eval()
    x = torch.randn(4, 1, 8, 8)
    reference = eager_cls_rows(model, x)
    assert model.config._attn_implementation == "sdpa"
    for layer in range(3):
        probe, outputs = CLSAttentionProbe(model, layer=layer, head_reduction="none")(x)
        assert probe.shape == (4, 3, 16)
        assert torch.allclose(probe, reference[layer], atol=1e-5)
    mean_probe, _ = CLSAttentionProbe(model)(x)  # default: last layer, mean over heads
    assert torch.allclose(mean_probe, reference[-1].mean(1), atol=1e-5)
    max_probe, _ = CLSAttentionProbe(model, layer=-2, head_reduction="max")(x)
    assert torch.allclose(max_probe, reference[-2].amax(1), atol=1e-5)
    avg_probe, _ = CLSAttentionProbe(model, layer=[0, 2])(x)
    assert torch.allclose(avg_probe, reference[[0, 2]].mean(0).mean(1), atol=1e-5)


def test_probe_only_stops_early_with_the_same_values():
    model = tiny_vit(layers=3).eval()
    x = torch.randn(2, 1, 8, 8)
    blocks = model.base_model.layers
    ran = []
    blocks[2].mlp.register_forward_hook(lambda *a: ran.append("mlp of the last block"))
    model.classifier.register_forward_hook(lambda *a: ran.append("classifier"))
    full, _ = CLSAttentionProbe(model, layer=-1)(x)
    assert ran == ["mlp of the last block", "classifier"]
    ran.clear()
    probe = CLSAttentionProbe(model, layer=[0, 2])
    early = probe.probe_only(x)
    assert ran == []  # neither the rest of the last block nor the head ran
    assert torch.allclose(early, CLSAttentionProbe(model, layer=[0, 2])(x)[0], atol=1e-6)
    assert torch.allclose(CLSAttentionProbe(model).probe_only(x), full, atol=1e-6)
    assert not any(m._forward_hooks for m in model.modules() if m not in (blocks[2].mlp, model.classifier))


def test_hooked_probe_is_differentiable_and_detaches():
    model = tiny_vit().eval().requires_grad_(False)
    x = torch.randn(2, 1, 8, 8, requires_grad=True)
    probe = CLSAttentionProbe(model)
    with probe:
        model(pixel_values=x)
    (1 - torch.cosine_similarity(probe.probe, torch.rand(2, 16), dim=-1)).mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not any(m._forward_hooks for m in model.modules())  # hooks removed on exit


def test_probe_rejects_unsupported_models():
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    timm_model = TimmWrapperForImageClassification(
        TimmWrapperConfig(architecture="vit_tiny_patch16_224", num_labels=4,
                          model_args={"img_size": 8, "patch_size": 2, "in_chans": 1, "embed_dim": 16, "depth": 1, "num_heads": 2})
    )
    with pytest.raises(UnsupportedModelError, match="vit, deit"):
        CLSAttentionProbe(timm_model)
    with pytest.raises(UnsupportedModelError, match="lambda_patch=0"):
        patch_grid(timm_model)
    with pytest.raises(ValueError, match="out of range"):
        CLSAttentionProbe(tiny_vit(layers=2), layer=2)
    with pytest.raises(RuntimeError, match="no forward pass"):
        CLSAttentionProbe(tiny_vit()).probe


def test_patch_probe_zero_against_itself_and_width_independent():
    model = tiny_vit(hidden=32).eval()
    x = torch.randn(3, 1, 8, 8)
    hs = model(pixel_values=x, output_hidden_states=True).hidden_states
    probes = patch_probes_from_hidden_states(hs, [1, 2], 1)
    assert probes.shape == (3, 2, 16)
    assert patch_probe_loss(probes, probes) == 0
    # the same hidden states embedded in a wider space (zero padding) give the same probe
    wide = [torch.cat([h, torch.zeros_like(h)], dim=-1) for h in hs]
    assert torch.allclose(patch_probes_from_hidden_states(wide, [1, 2], 1), probes, atol=1e-6)
    # ... and so does any rotation/scaling of each token
    q, _ = torch.linalg.qr(torch.randn(32, 32))
    assert torch.allclose(patch_attention_probe(hs[2] @ q * 3.0, 1), probes[:, 1], atol=1e-5)
    # models of different widths on the same grid give comparable probes
    wider = tiny_vit(hidden=64).eval()
    hs_w = wider(pixel_values=x, output_hidden_states=True).hidden_states
    assert patch_probe_loss(probes, patch_probes_from_hidden_states(hs_w, [1, 2], 1)).item() >= 0


def test_deit_skips_distillation_token():
    model = tiny_vit(deit=True)
    assert num_prefix_tokens(model) == 2
    hs = model(pixel_values=torch.randn(1, 1, 8, 8), output_hidden_states=True).hidden_states
    assert hs[0].shape[1] == 18 and patch_probes_from_hidden_states(hs, [1], 2).shape == (1, 1, 16)


def test_layer_pairs_and_interpolation():
    assert default_layer_pairs(3, 6) == [(1, 2), (2, 4), (3, 6)]
    assert default_layer_pairs(6, 3) == [(2, 1), (4, 2), (6, 3)]
    assert default_layer_pairs(2, 2) == [(1, 1), (2, 2)]
    assert default_layer_pairs(3, 4)[-1] == (3, 4)
    assert parse_layer_pairs(["1:2", (3, 4)]) == [(1, 2), (3, 4)]
    with pytest.raises(ValueError, match="STUDENT:TEACHER"):
        parse_layer_pairs(["1-2"])
    probes = torch.rand(2, 3, 16)
    assert interpolate_probes(probes, (4, 4), (4, 4)) is probes
    assert interpolate_probes(probes, (4, 4), (2, 2)).shape == (2, 3, 4)
    constant = torch.full((1, 1, 16), 0.25)
    assert torch.allclose(interpolate_probes(constant, (4, 4), (8, 8)), torch.full((1, 1, 64), 0.25))
