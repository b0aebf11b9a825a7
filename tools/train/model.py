"""A Llama-style decoder whose forward pass is exactly llama2.c ``run.c``'s, plus the
llama2.c legacy checkpoint writer/reader.

run.c semantics reproduced here:
  * token embedding, pre-RMSNorm ``x * rsqrt(mean(x^2) + 1e-5) * w`` (weight only);
  * RoPE on q and k with ADJACENT pairs (2i, 2i+1) of each head, theta 10000,
    inv_freq_i = theta^(-2i/head_size), angle = pos * inv_freq_i;
  * grouped-query causal softmax attention, scale 1/sqrt(head_size), query head h reads
    kv head h // (n_heads / n_kv_heads);
  * SwiGLU FFN ``w2(silu(w1 x) * w3 x)``; final RMSNorm; classifier tied to the embedding;
  * no biases, no dropout.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, asdict
from typing import List, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class Config:
    dim: int = 128
    hidden_dim: int = 352
    n_layers: int = 6
    n_heads: int = 4
    n_kv_heads: int = 2
    vocab_size: int = 768
    seq_len: int = 256
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0

    @property
    def head_size(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_size


def rope_tables(head_size: int, seq_len: int, theta: float = 10000.0):
    """cos/sin [seq_len, head_size/2] of pos * theta^(-2i/head_size) (llama2.c's legacy tables)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_size, 2, dtype=torch.float64) / head_size))
    ang = torch.outer(torch.arange(seq_len, dtype=torch.float64), inv_freq)
    return torch.cos(ang).float(), torch.sin(ang).float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, T, H, hs]; rotates pairs (x[2i], x[2i+1]) by angle [T, hs/2]."""
    xr = x.float().reshape(*x.shape[:-1], -1, 2)
    x0, x1 = xr[..., 0], xr[..., 1]
    c = cos[None, :, None, :]
    s = sin[None, :, None, :]
    out = torch.stack([x0 * c - x1 * s, x0 * s + x1 * c], dim=-1)
    return out.flatten(-2).type_as(x)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Attention(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        hs = cfg.head_size
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * hs, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.kv_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.kv_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * hs, cfg.dim, bias=False)

    def forward(self, x, cos, sin, mask, want_probs: bool = False):
        B, T, _ = x.shape
        c = self.cfg
        hs = c.head_size
        q = self.wq(x).view(B, T, c.n_heads, hs)
        k = self.wk(x).view(B, T, c.n_kv_heads, hs)
        v = self.wv(x).view(B, T, c.n_kv_heads, hs)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        rep = c.n_heads // c.n_kv_heads
        if rep > 1:  # query head h uses kv head h // rep
            k = k.repeat_interleave(rep, dim=2)
            v = v.repeat_interleave(rep, dim=2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, T, hs]
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
        att = att.masked_fill(mask[:T, :T], float("-inf"))
        att = F.softmax(att.float(), dim=-1).type_as(q)
        y = (att @ v).transpose(1, 2).reshape(B, T, c.n_heads * hs)
        return self.wo(y), (att if want_probs else None)


class FeedForward(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.w1 = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.w2 = nn.Linear(cfg.hidden_dim, cfg.dim, bias=False)
        self.w3 = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg)

    def forward(self, x, cos, sin, mask, want_probs=False):
        a, p = self.attention(self.attention_norm(x), cos, sin, mask, want_probs)
        h = x + a
        return h + self.feed_forward(self.ffn_norm(h)), p


class Transformer(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        assert cfg.dim % cfg.n_heads == 0 and cfg.n_heads % cfg.n_kv_heads == 0
        assert cfg.head_size % 2 == 0
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        cos, sin = rope_tables(cfg.head_size, cfg.seq_len, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        mask = torch.triu(torch.ones(cfg.seq_len, cfg.seq_len, dtype=torch.bool), diagonal=1)
        self.register_buffer("causal_mask", mask, persistent=False)
        # llama2.c model.py init: N(0, 0.02), residual projections scaled by 1/sqrt(2L)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * cfg.n_layers) if name.endswith(("wo.weight", "w3.weight")) else 0.02
                nn.init.normal_(p, mean=0.0, std=std)

    def forward(self, tokens: torch.Tensor, want_probs: bool = False):
        """tokens [B, T] -> logits [B, T, vocab] (and per-layer attention probs [B, H, T, T])."""
        T = tokens.shape[1]
        assert T <= self.cfg.seq_len
        h = self.tok_embeddings(tokens)
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        probs: List[torch.Tensor] = []
        for layer in self.layers:
            h, p = layer(h, cos, sin, self.causal_mask, want_probs)
            if want_probs:
                probs.append(p)
        h = self.norm(h)
        logits = F.linear(h, self.tok_embeddings.weight)  # tied classifier
        return (logits, probs) if want_probs else logits

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


# ---- llama2.c legacy checkpoint -----------------------------------------------------

def export_llama2c(model: Transformer, path: str) -> None:
    """Writes the llama2.c legacy (version 0) checkpoint: 7 int32 header fields
    (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; vocab_size
    positive = classifier shared with the embedding), then float32 arrays, matrices
    row-major [out][in]: token_embedding [vocab, dim], rms_att [L, dim], wq [L, dim, dim],
    wk [L, kv_dim, dim], wv [L, kv_dim, dim], wo [L, dim, dim], rms_ffn [L, dim],
    w1 [L, hidden, dim], w2 [L, dim, hidden], w3 [L, hidden, dim], rms_final [dim],
    freq_cis_real [seq_len, head_size/2], freq_cis_imag [seq_len, head_size/2]."""
    c = model.cfg
    L = model.layers

    def cat(get):
        return torch.stack([get(l).detach().float().cpu() for l in L])

    arrays = [
        model.tok_embeddings.weight,
        cat(lambda l: l.attention_norm.weight),
        cat(lambda l: l.attention.wq.weight),
        cat(lambda l: l.attention.wk.weight),
        cat(lambda l: l.attention.wv.weight),
        cat(lambda l: l.attention.wo.weight),
        cat(lambda l: l.ffn_norm.weight),
        cat(lambda l: l.feed_forward.w1.weight),
        cat(lambda l: l.feed_forward.w2.weight),
        cat(lambda l: l.feed_forward.w3.weight),
        model.norm.weight,
        model.rope_cos,
        model.rope_sin,
    ]
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<7i", c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads,
                            c.vocab_size, c.seq_len))
        for a in arrays:
            f.write(a.detach().float().cpu().contiguous().numpy().astype("<f4").tobytes())
    import os
    os.replace(tmp, path)


def load_llama2c(path: str) -> Transformer:
    """Reads a checkpoint written by export_llama2c (shared classifier only)."""
    with open(path, "rb") as f:
        data = f.read()
    dim, hidden, nl, nh, nkv, vocab, seq_len = struct.unpack_from("<7i", data, 0)
    assert vocab > 0, "only the shared-classifier variant is supported"
    cfg = Config(dim=dim, hidden_dim=hidden, n_layers=nl, n_heads=nh, n_kv_heads=nkv,
                 vocab_size=vocab, seq_len=seq_len)
    model = Transformer(cfg)
    buf = np.frombuffer(data, dtype="<f4", offset=28)
    off = 0

    def take(*shape):
        nonlocal off
        n = int(np.prod(shape))
        a = torch.from_numpy(buf[off:off + n].copy()).view(*shape)
        off += n
        return a

    hs, kvd = cfg.head_size, cfg.kv_dim
    with torch.no_grad():
        model.tok_embeddings.weight.copy_(take(vocab, dim))
        for name, shape in [("attention_norm.weight", (dim,)), ("attention.wq.weight", (dim, dim)),
                            ("attention.wk.weight", (kvd, dim)), ("attention.wv.weight", (kvd, dim)),
                            ("attention.wo.weight", (dim, dim)), ("ffn_norm.weight", (dim,)),
                            ("feed_forward.w1.weight", (hidden, dim)),
                            ("feed_forward.w2.weight", (dim, hidden)),
                            ("feed_forward.w3.weight", (hidden, dim))]:
            stacked = take(nl, *shape)
            for i, layer in enumerate(model.layers):
                layer.get_parameter(name).copy_(stacked[i])
        model.norm.weight.copy_(take(dim))
        cos, sin = take(seq_len, hs // 2), take(seq_len, hs // 2)
        assert torch.allclose(cos, model.rope_cos, atol=1e-6) and torch.allclose(sin, model.rope_sin, atol=1e-6)
    assert off == buf.size, f"checkpoint has {buf.size - off} trailing floats"
    return model
