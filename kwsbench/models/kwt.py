"""Keyword Transformer KWT-1/2/3: A. Berg, M. O'Connor, M. T. Cruz, "Keyword Transformer: A Self-Attention Model
for Keyword Spotting", Interspeech 2021.

Rebuilt from ARM-software/keyword-transformer (../shared/docs/PAPER.md §6): one token per MFCC frame, a class
token, post-norm encoder blocks. Attention is written with plain matmuls and softmax so that fvcore counts it
and ONNX / torch.export see ordinary ops. (A popular PyTorch reimplementation is pre-norm-like, drops the output
projection and adds a final LayerNorm: 557,516 parameters, not the paper's model.)
"""

from __future__ import annotations

import torch
from torch import nn

from kwsbench.errors import ModelError
from kwsbench.models.layers import check_input
from kwsbench.models.registry import Declared, InputSpec, Reference, register_model

CITATION = (
    'A. Berg, M. O\'Connor, M. T. Cruz, "Keyword Transformer: A Self-Attention Model for Keyword Spotting", '
    "Interspeech 2021, pp. 4249-4253, arXiv:2104.00769"
)
MFCC_40x98 = InputSpec(
    "mfcc",
    40,
    98,
    note="40 MFCC from 80 mel bins (20-7600 Hz), 30 ms window, 10 ms hop, 98 frames per 1 s",
    n_mels=80,
    f_min=20.0,
    f_max=7600.0,
)
LN_EPS = 1e-6  # the TF reference's LayerNormalization epsilon


class SelfAttention(nn.Module):
    """Multi-head self-attention ``(B, N, dim) -> (B, N, dim)``: bias-free q/k/v, output projection with bias."""

    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        self.qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.out = nn.Linear(heads * dim_head, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.dim_head)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, N, dim_head)
        weights = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * self.dim_head**-0.5, dim=-1)
        y = torch.matmul(weights, v).transpose(1, 2).reshape(b, n, self.heads * self.dim_head)
        return self.out(y)


class PostNormBlock(nn.Module):
    """``x = LN(x + Attn(x)); x = LN(x + W2 GELU(W1 x))`` (the paper's post-norm choice, Section 2)."""

    def __init__(self, dim: int, heads: int, dim_head: int, mlp_dim: int):
        super().__init__()
        self.attention = SelfAttention(dim, heads, dim_head)
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.attention(x))
        return self.norm2(x + self.mlp(x))


class KWT(nn.Module):
    """Keyword Transformer: ``(B, 1, 40, frames) -> (B, num_classes)``.

    Each frame's 40 MFCC -> Linear(40, dim) is a token; a learned class token is prepended and a learned
    position embedding ``(frames + 1) x dim`` added; ``depth`` post-norm blocks; Linear(dim, classes) on the
    class token's output (no final LayerNorm). The position embedding fixes the number of frames.
    """

    def __init__(
        self,
        num_classes: int = 12,
        *,
        dim: int = 64,
        depth: int = 12,
        heads: int = 1,
        dim_head: int = 64,
        mlp_dim: int = 256,
        frames: int = 98,
        n_mfcc: int = 40,
    ):
        super().__init__()
        if min(dim, depth, heads, dim_head, mlp_dim, frames) < 1:
            raise ModelError("KWT sizes (dim, depth, heads, dim_head, mlp_dim, frames) must all be >= 1")
        self.n_mfcc = n_mfcc
        self.frames = frames
        self.embed = nn.Linear(n_mfcc, dim)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.position = nn.Parameter(torch.randn(1, frames + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*(PostNormBlock(dim, heads, dim_head, mlp_dim) for _ in range(depth)))
        self.classifier = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.n_mfcc)
        if x.shape[-1] != self.frames:
            raise ModelError(
                f"KWT was built for {self.frames} frames (its position embedding), got {x.shape[-1]}; "
                f"pass frames={x.shape[-1]} or use the declared input"
            )
        tokens = self.embed(x.squeeze(1).transpose(1, 2))  # (B, T, dim): one token per frame
        tokens = torch.cat([self.class_token.expand(x.shape[0], -1, -1), tokens], dim=1) + self.position
        return self.classifier(self.blocks(tokens)[:, 0])


def _entry(size: int, params: int, stated: str, ref_macs_m: float | None, layout: str, notes: str = ""):
    return dict(
        family="kwt",
        citation=CITATION,
        input=MFCC_40x98,
        declared=Declared(
            source="Berg et al. 2021, model table (KWT-1/2/3 parameters)",
            params=round(float(stated.rstrip("k").replace(",", "")) * 1000),
            params_stated=stated,
            macs_counting="no multiply count declared (PAPER.md gives none); see the reference rebuild",
            configuration=f"KWT-{size}: {layout}, 12 post-norm blocks; 12 classes, 40 MFCC x 98 frames",
            notes=notes,
        ),
        reference=Reference(
            params=params,
            macs_conv=round(ref_macs_m * 1e6) if ref_macs_m else None,
            source="ARM-software/keyword-transformer rebuilt in PyTorch (PAPER.md §6)",
            exact=True,
        ),
    )


@register_model(**_entry(1, 607_308, "607k", 73.7, "dim 64, 1 head, MLP 256"))
def kwt_1(num_classes: int = 12, **options) -> KWT:
    """KWT-1: dim 64, 1 head of 64, MLP 256, 12 blocks."""
    return KWT(num_classes, **{"dim": 64, "heads": 1, "mlp_dim": 256, **options})


@register_model(**_entry(2, 2_394_252, "2,394k", None, "dim 128, 2 heads of 64, MLP 512"))
def kwt_2(num_classes: int = 12, **options) -> KWT:
    """KWT-2: dim 128, 2 heads of 64, MLP 512, 12 blocks."""
    return KWT(num_classes, **{"dim": 128, "heads": 2, "mlp_dim": 512, **options})


@register_model(**_entry(3, 5_360_844, "5,361k", None, "dim 192, 3 heads of 64, MLP 768"))
def kwt_3(num_classes: int = 12, **options) -> KWT:
    """KWT-3: dim 192, 3 heads of 64, MLP 768, 12 blocks."""
    return KWT(num_classes, **{"dim": 192, "heads": 3, "mlp_dim": 768, **options})
