"""Transformers: LayerNorm affine folded, attention as modules, zennit LRP on canonized ViTs.

LayerNorm rule (documented in the README): the affine-free LayerNorm that canonization
leaves gets zennit's ``Pass`` rule, i.e. its normalisation is the identity for relevance
(as AttnLRP / LXT treat the normalisation); its affine part now lives in the following
Linear layers, which get EpsilonPlusFlat's ε rule.
"""

from __future__ import annotations

import operator

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import fx, nn
from zennit.attribution import Gradient
from zennit.composites import EpsilonPlusFlat
from zennit.rules import Pass

from canonc import canonize
from canonc import nn as cnn
from canonc.zoo import build, randomize

FUNCTIONAL = {operator.add, operator.iadd, torch.add, operator.matmul, torch.matmul, torch.bmm, torch.baddbmm,
              F.softmax, torch.softmax, F.scaled_dot_product_attention}
METHODS = {"add", "add_", "__add__", "matmul", "bmm", "baddbmm", "softmax"}


def functional_attention_ops(gm: fx.GraphModule) -> list[str]:
    """Nodes that still compute a matmul / softmax / add / attention as a function or method."""
    return [n.name for n in gm.graph.nodes
            if n.op == "call_function" and n.target in FUNCTIONAL or n.op == "call_method" and n.target in METHODS]


def lrp(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """EpsilonPlusFlat relevance of the top logit, with the LayerNorm rule above."""
    composite = EpsilonPlusFlat(layer_map=[(nn.LayerNorm, Pass())])
    x = x.clone().requires_grad_(True)
    with Gradient(model=module, composite=composite) as attributor:
        out = module(x)
        target = torch.eye(out.shape[-1])[out.argmax(-1)]
        _, relevance = attributor(x, target)
    return relevance


def small_torchvision_vit() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(image_size=32, patch_size=16, num_layers=2, num_heads=2,
                                                 hidden_dim=32, mlp_dim=64, num_classes=10)
    randomize(model, (2, 3, 32, 32))
    return model, torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def check_transformer(model: nn.Module, x: torch.Tensor, n_layernorm: int, **options) -> None:
    """Canonize, then assert: verified, LN affine folded, attention as modules, LRP runs."""
    res = canonize(model, x[:1], options=options)
    assert res.report.verified and res.report.max_rel_error_fp64 <= 1e-9
    norms = [m for m in res.module.modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == n_layernorm and not any(m.elementwise_affine for m in norms)
    assert functional_attention_ops(res.module) == []
    softmaxes = [m for m in res.module.modules() if isinstance(m, nn.Softmax)]
    products = [m for m in res.module.modules() if isinstance(m, cnn.MatMul)]
    assert len(products) == 2 * len(softmaxes) and softmaxes
    relevance = lrp(res.module, x)
    assert relevance.shape == x.shape and torch.isfinite(relevance).all() and relevance.abs().sum() > 0


def test_torchvision_vit_small_unpacked(one_thread):
    model, x = small_torchvision_vit()
    check_transformer(model, x, n_layernorm=5, unpack_mha=True)


def test_multihead_attention_is_opaque_unless_unpacked(one_thread):
    model, x = small_torchvision_vit()
    res = canonize(model, x[:1])
    assert [e["node"] for e in res.report.lint if e["kind"] == "opaque-module"] == \
        ["encoder_layers_encoder_layer_0_self_attention", "encoder_layers_encoder_layer_1_self_attention"]
    skipped = [e for e in res.report.skipped if e["rule"] == "fold-norm-affine"]
    assert len(skipped) == 2 and "self_attention" in skipped[0]["reason"]


@pytest.mark.parametrize("batch_first", [True, False])
def test_unpack_mha_matches_multihead_attention(batch_first, one_thread):
    torch.manual_seed(0)

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.LayerNorm(16)
            self.attn = nn.MultiheadAttention(16, 4, batch_first=batch_first)
            self.head = nn.Linear(16, 3)

        def forward(self, x):
            h = self.norm(x)
            return self.head(self.attn(h, h, h, need_weights=False)[0] + x)

    model = randomize(Block(), (2, 5, 16)).eval()
    res = canonize(model, torch.randn(2, 5, 16), options={"unpack_mha": True})
    assert res.report.verified and res.report.max_rel_error_fp64 <= 1e-9
    assert [e["rule"] for e in res.report.rewrites].count("unpack-mha") == 1
    assert [e["rule"] for e in res.report.rewrites].count("fold-norm-affine") == 1
    assert sorted(n for n, m in res.module.named_modules() if isinstance(m, nn.Linear)) == \
        ["attn_k_proj", "attn_out_proj", "attn_q_proj", "attn_v_proj", "head"]


def test_mha_with_a_mask_is_refused_with_reason(one_thread):
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    mask = torch.zeros(4, 4, dtype=torch.bool).triu(1)

    class Masked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = mha
            self.register_buffer("mask", mask)

        def forward(self, x):
            return self.attn(x, x, x, attn_mask=self.mask)[0]

    res = canonize(Masked().eval(), torch.randn(1, 4, 8), options={"unpack_mha": True})
    assert res.report.verified
    assert [(e["rule"], e["reason"]) for e in res.report.skipped if e["rule"] == "unpack-mha"] == \
        [("unpack-mha", "it is called with an attention mask")]


def test_timm_vit_tiny_two_blocks(one_thread):
    """timm's vit_tiny_patch16_224 architecture with 2 of its 12 blocks, at 32 px (the fast suite)."""
    import timm

    torch.manual_seed(0)
    model = randomize(timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=2), (2, 3, 32, 32))
    check_transformer(model, torch.randn(2, 3, 32, 32), n_layernorm=5)


@pytest.mark.slow
def test_timm_vit_tiny_224(one_thread):
    model, x = build("timm", "vit_tiny_patch16_224", 224)
    check_transformer(model, x, n_layernorm=25)


@pytest.mark.slow
def test_torchvision_vit_b_16_224(one_thread):
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(weights=None)
    randomize(model, (2, 3, 224, 224))
    check_transformer(model, torch.randn(1, 3, 224, 224), n_layernorm=25, unpack_mha=True)


class PreNorm(nn.Module):
    """LayerNorm feeding two Linears through views, and one feeding the residual stream."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)
        self.cls_head = nn.Linear(8, 3)
        self.stem_norm = nn.LayerNorm(8)

    def forward(self, x):
        x = self.stem_norm(x)
        h = self.norm(x)
        return self.head(self.fc(h.reshape(-1, 4, 8)).mean(1)) + self.cls_head(h[:, 0])


def test_layernorm_affine_folds_into_linears_or_is_kept_with_reason(one_thread):
    model = randomize(PreNorm(), (2, 4, 8))
    res = canonize(model, torch.randn(2, 4, 8))
    assert res.report.verified and res.report.max_rel_error_fp64 <= 1e-9
    assert res.module.get_submodule("norm").elementwise_affine is False
    assert res.module.get_submodule("stem_norm").elementwise_affine is True
    skipped = [e for e in res.report.skipped if e["rule"] == "fold-norm-affine"]
    assert [(e["node"], e["reason"]) for e in skipped] == [("stem_norm", "it feeds 'norm' (norm), not a Linear over its last axis")]
