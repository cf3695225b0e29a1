"""UniAD reconstruction transformer (You et al., NeurIPS 2022), spec ``uniad.md`` §3–§4.

Tokens are the ``L = h*w`` positions of the aligned backbone feature map. A post-norm encoder
with neighbour-masked self-attention (each query is blind to the window around itself) feeds a *layer-wise query decoder*: every decoder layer owns
a learned query set that attends first to the encoder memory, then to the previous layer's
output, both through the same neighbour mask. Layout inside the module is batch-first
``[B, L, D]``; inputs and outputs are feature maps ``[B, C, h, w]``.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ad_pipeline.methods.uniad.config import Config


def neighbour_mask(h: int, w: int, size: int) -> Tensor:
    """Which key positions each query position may attend to: bool ``[h*w, h*w]``, True = visible.

    As in the reference: query ``(i, j)`` may NOT see the keys in rows ``i-size//2 .. i+size//2``
    and columns ``j-size//2 .. j+size//2`` (clipped at the borders), its own position included, and
    sees every other position, so a token cannot copy itself or its neighbours (the paper's
    "identical shortcut"). A grid on which some window covers every position would leave a softmax
    row with no visible key (NaN): that is a ``ValueError``.
    """
    half = size // 2
    rows = torch.arange(h)
    cols = torch.arange(w)
    row_near = (rows[:, None] - rows[None, :]).abs() <= half  # [h, h]
    col_near = (cols[:, None] - cols[None, :]).abs() <= half  # [w, w]
    # hidden[(i,j),(k,l)] = row_near[i,k] & col_near[j,l]
    visible = ~(row_near[:, None, :, None] & col_near[None, :, None, :]).reshape(h * w, h * w)
    if not visible.any(dim=1).all():
        raise ValueError(f"neighbor_size {size} hides the whole {h}x{w} feature grid from some query "
                         f"(every key masked); use a smaller neighbor_size or a larger image_size")
    return visible


def draw_jitter_noise(shape: tuple[int, ...], prob: float, generator: torch.Generator | None = None) -> Tensor:
    """Standard-normal noise ε ``shape = [B, ...]``; a sample's noise is zeroed with probability ``1 - prob``."""
    noise = torch.randn(shape, generator=generator)
    if prob < 1.0:
        keep = torch.rand(shape[0], generator=generator) < prob
        noise = noise * keep.view(-1, *([1] * (len(shape) - 1)))
    return noise


def apply_jitter(features: Tensor, noise: Tensor, scale: float) -> Tensor:
    """Feature jittering f̃ = f + ε·(scale·‖f‖₂/C) per token; ``features``, ``noise``: ``[B, C, h, w]``."""
    channels = features.shape[1]
    token_norm = features.norm(dim=1, keepdim=True)  # [B, 1, h, w]
    return features + noise * (scale * token_norm / channels)


class LearnedPositionEmbedding(nn.Module):
    """Learned row and column tables (``U(0,1)`` init); ``pos[i*w + j] = [col[j], row[i]]`` → ``[h*w, D]``."""

    def __init__(self, h: int, w: int, dim: int):
        super().__init__()
        self.rows = nn.Parameter(torch.rand(h, dim // 2))
        self.cols = nn.Parameter(torch.rand(w, dim // 2))

    def forward(self) -> Tensor:
        h, w = self.rows.shape[0], self.cols.shape[0]
        grid_cols = self.cols[None, :, :].expand(h, w, -1)
        grid_rows = self.rows[:, None, :].expand(h, w, -1)
        return torch.cat([grid_cols, grid_rows], dim=-1).reshape(h * w, -1)


class FeedForward(nn.Module):
    """Linear → ReLU → dropout → Linear: ``[..., D] → [..., D]``."""

    def __init__(self, dim: int, ffn: int, dropout: float):
        super().__init__()
        self.linear1 = nn.Linear(dim, ffn)
        self.linear2 = nn.Linear(ffn, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(F.relu(self.linear1(x))))


class EncoderLayer(nn.Module):
    """Post-norm layer: masked self-attention (pos added to queries and keys only), then FFN."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ffn = FeedForward(dim, ffn, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.drop1 = nn.Dropout(dropout)
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x: Tensor, pos: Tensor, mask: Tensor) -> Tensor:
        """``x``: ``[B, L, D]``, ``pos``: ``[L, D]``, ``mask``: additive ``[L, L]`` (0 / -inf)."""
        qk = x + pos
        x = self.norm1(x + self.drop1(self.attn(qk, qk, x, attn_mask=mask, need_weights=False)[0]))
        return self.norm2(x + self.drop2(self.ffn(x)))


class QueryDecoderLayer(nn.Module):
    """Post-norm decoder layer with its own learned queries ``[L, D]``.

    queries → attend(memory) → attend(previous output) → FFN, each followed by residual + LayerNorm.
    """

    def __init__(self, num_queries: int, dim: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(num_queries, dim))
        self.attn_memory = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.attn_previous = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ffn = FeedForward(dim, ffn, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.drop1 = nn.Dropout(dropout)
        self.drop2 = nn.Dropout(dropout)
        self.drop3 = nn.Dropout(dropout)

    def forward(self, previous: Tensor, memory: Tensor, pos: Tensor, mask: Tensor) -> Tensor:
        """``previous``, ``memory``: ``[B, L, D]``; returns ``[B, L, D]``."""
        t = self.queries.unsqueeze(0).expand(memory.shape[0], -1, -1)
        a = self.attn_memory(t + pos, memory + pos, memory, attn_mask=mask, need_weights=False)[0]
        t = self.norm1(t + self.drop1(a))
        a = self.attn_previous(t + pos, previous + pos, previous, attn_mask=mask, need_weights=False)[0]
        t = self.norm2(t + self.drop2(a))
        return self.norm3(t + self.drop3(self.ffn(t)))


class UniADReconstructor(nn.Module):
    """Reconstruct aligned backbone features ``[B, C, h, w]`` from their (jittered) tokens.

    Training mode adds feature jitter to the input (scale ``jitter_scale``, per-sample probability
    ``jitter_prob``); pass ``noise`` (ε, same shape as the input) to make it reproducible, else ε
    is drawn from the global torch RNG. Eval mode never jitters.
    """

    def __init__(
        self,
        in_channels: int,
        grid: tuple[int, int],
        *,
        hidden: int = 256,
        heads: int = 8,
        ffn: int = 1024,
        enc_layers: int = 4,
        dec_layers: int = 4,
        neighbor_size: int = 7,
        dropout: float = 0.1,
        jitter_scale: float = 20.0,
        jitter_prob: float = 1.0,
    ):
        super().__init__()
        h, w = grid
        self.grid = (h, w)
        self.jitter_scale = jitter_scale
        self.jitter_prob = jitter_prob
        self.pos_embed = LearnedPositionEmbedding(h, w, hidden)
        # Layers are deep copies of one prototype, as in the reference: parameters that the xavier
        # pass below does not touch (queries, attention in_proj) start equal across layers.
        self.encoder = _clones(EncoderLayer(hidden, heads, ffn, dropout), enc_layers)
        self.decoder = _clones(QueryDecoderLayer(h * w, hidden, heads, ffn, dropout), dec_layers)
        self.decoder_norm = nn.LayerNorm(hidden)
        self.input_proj = nn.Linear(in_channels, hidden)
        self.output_proj = nn.Linear(hidden, in_channels)
        visible = neighbour_mask(h, w, neighbor_size)
        self.register_buffer("attn_mask", torch.zeros(visible.shape).masked_fill(~visible, float("-inf")),
                             persistent=False)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, features: Tensor, noise: Tensor | None = None) -> Tensor:
        """``features``: clean aligned features ``[B, C, h, w]`` → reconstruction ``[B, C, h, w]``."""
        b, c, h, w = features.shape
        if (h, w) != self.grid:
            raise ValueError(f"feature grid {(h, w)} does not match the model's {self.grid}")
        x = features
        if self.training and self.jitter_scale > 0:
            if noise is None:
                noise = draw_jitter_noise(tuple(features.shape), self.jitter_prob).to(features.device)
            x = apply_jitter(features, noise, self.jitter_scale)
        tokens = self.input_proj(x.flatten(2).transpose(1, 2))  # [B, L, D]
        pos = self.pos_embed()
        memory = tokens
        for layer in self.encoder:
            memory = layer(memory, pos, self.attn_mask)
        out = memory
        for layer in self.decoder:
            out = layer(out, memory, pos, self.attn_mask)
        rec = self.output_proj(self.decoder_norm(out))  # [B, L, C]
        return rec.transpose(1, 2).reshape(b, c, h, w)


def build_model(cfg: Config, shape: tuple[int, int, int]) -> UniADReconstructor:
    """The reconstruction model for aligned features of ``shape = (C, h, w)``."""
    c, h, w = shape
    return UniADReconstructor(
        c, (h, w), hidden=cfg.hidden, heads=cfg.heads, ffn=cfg.ffn, enc_layers=cfg.enc_layers,
        dec_layers=cfg.dec_layers, neighbor_size=cfg.neighbor_size, dropout=cfg.dropout,
        jitter_scale=cfg.jitter_scale, jitter_prob=cfg.jitter_prob,
    )


def anomaly_map(features: Tensor, reconstruction: Tensor, size: tuple[int, int]) -> Tensor:
    """Per-position L2 reconstruction error ``[B, h, w]`` upsampled (bilinear, align_corners=True) to ``[B, *size]``."""
    err = (reconstruction - features).pow(2).sum(dim=1, keepdim=True).sqrt()
    return F.interpolate(err, size=size, mode="bilinear", align_corners=True)[:, 0]


def image_scores(maps: Tensor, pool: int = 16) -> Tensor:
    """Image score = max of the ``pool``×``pool`` box-averaged map (stride 1, no padding): ``[B,H,W] → [B]``."""
    pooled = F.avg_pool2d(maps[:, None], kernel_size=min(pool, *maps.shape[-2:]), stride=1)
    return pooled.flatten(1).amax(dim=1)


def _clones(layer: nn.Module, n: int) -> nn.ModuleList:
    return nn.ModuleList(copy.deepcopy(layer) for _ in range(n))
