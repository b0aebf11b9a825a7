#!/usr/bin/python3
"""Golden logits for the C++ tests.

Loads <model-dir>/model.bin (llama2.c legacy format) with the PyTorch model, runs the first
--tokens ids of <model-dir>/heldout.i32 (written by make_eval_data.py; for the sink-token
model they start with <sink>) as one causal sequence from position 0, and writes
<model-dir>/golden.bin:

    int32 T, int32 vocab_size, int32 tokens[T], float32 logits[T][vocab_size]

all little-endian; logits[t] is the next-token distribution after tokens[0..t] (full
causal attention, positions 0..T-1). T=64 and vocab 768 give 196,872 bytes.

It also re-computes the same logits with an independent NumPy port of llama2.c run.c's
token-by-token forward pass (reading model.bin directly, RoPE computed on the fly as run.c
does) and reports the largest difference; it exits non-zero above --tol.

  /usr/bin/python3 tools/train/golden.py --model-dir models/vanilla
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import load_llama2c  # noqa: E402


def runc_forward(path: str, tokens) -> np.ndarray:
    """NumPy port of llama2.c run.c (legacy checkpoint, shared classifier), float32."""
    with open(path, "rb") as f:
        data = f.read()
    dim, hidden, nl, nh, nkv, vocab, seq_len = struct.unpack_from("<7i", data, 0)
    w = np.frombuffer(data, dtype="<f4", offset=28)
    hs = dim // nh
    kv_dim = dim * nkv // nh
    kv_mul = nh // nkv
    off = 0

    def take(*shape):
        nonlocal off
        n = int(np.prod(shape))
        a = w[off:off + n].reshape(shape)
        off += n
        return a

    emb = take(vocab, dim)
    rms_att = take(nl, dim)
    wq = take(nl, dim, dim)
    wk = take(nl, kv_dim, dim)
    wv = take(nl, kv_dim, dim)
    wo = take(nl, dim, dim)
    rms_ffn = take(nl, dim)
    w1 = take(nl, hidden, dim)
    w2 = take(nl, dim, hidden)
    w3 = take(nl, hidden, dim)
    rms_final = take(dim)

    def rmsnorm(x, g):
        ss = np.float32(np.dot(x, x) / np.float32(x.size) + np.float32(1e-5))
        return g * (x * np.float32(1.0 / np.sqrt(ss)))

    key_cache = np.zeros((nl, seq_len, kv_dim), np.float32)
    value_cache = np.zeros((nl, seq_len, kv_dim), np.float32)
    out = []
    for pos, tok in enumerate(tokens):
        x = emb[tok].copy()
        for l in range(nl):
            xb = rmsnorm(x, rms_att[l])
            q = wq[l] @ xb
            k = wk[l] @ xb
            v = wv[l] @ xb
            for i in range(0, dim, 2):
                head_dim = i % hs
                freq = 1.0 / np.power(np.float32(10000.0), np.float32(head_dim) / np.float32(hs))
                val = np.float32(pos) * np.float32(freq)
                fcr, fci = np.float32(np.cos(val)), np.float32(np.sin(val))
                vecs = (q, k) if i < kv_dim else (q,)
                for vec in vecs:
                    v0, v1 = vec[i], vec[i + 1]
                    vec[i] = v0 * fcr - v1 * fci
                    vec[i + 1] = v0 * fci + v1 * fcr
            key_cache[l, pos] = k
            value_cache[l, pos] = v
            xb = np.zeros(dim, np.float32)
            for h in range(nh):
                qh = q[h * hs:(h + 1) * hs]
                kvh = (h // kv_mul) * hs
                att = key_cache[l, :pos + 1, kvh:kvh + hs] @ qh / np.float32(np.sqrt(hs))
                att = np.exp(att - att.max())
                att /= att.sum()
                xb[h * hs:(h + 1) * hs] = att @ value_cache[l, :pos + 1, kvh:kvh + hs]
            x = x + wo[l] @ xb
            xb = rmsnorm(x, rms_ffn[l])
            hb = w1[l] @ xb
            hb2 = w3[l] @ xb
            hb = hb * (np.float32(1.0) / (np.float32(1.0) + np.exp(-hb))) * hb2
            x = x + w2[l] @ hb
        x = rmsnorm(x, rms_final)
        out.append(emb @ x)
    return np.stack(out).astype(np.float32)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", required=True)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--tol", type=float, default=1e-3)
    a = p.parse_args(argv)
    torch.set_num_threads(1)

    mpath = os.path.join(a.model_dir, "model.bin")
    toks = np.fromfile(os.path.join(a.model_dir, "heldout.i32"), dtype="<i4")[:a.tokens]
    T = len(toks)
    model = load_llama2c(mpath)
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(toks.astype(np.int64))[None])[0].float().numpy()
    ref = runc_forward(mpath, toks.tolist())
    max_diff = float(np.abs(ref - logits).max())
    V = logits.shape[1]
    gpath = os.path.join(a.model_dir, "golden.bin")
    with open(gpath, "wb") as f:
        f.write(struct.pack("<2i", T, V))
        f.write(toks.astype("<i4").tobytes())
        f.write(logits.astype("<f4").tobytes())
    # mean next-token NLL over the window (targets tokens[1..T-1]), a sanity number for tests
    lp = logits - logits.max(1, keepdims=True)
    lp = lp - np.log(np.exp(lp).sum(1, keepdims=True))
    nll = float(-lp[np.arange(T - 1), toks[1:]].mean())
    info = {"file": "golden.bin", "T": T, "vocab_size": V, "bytes": os.path.getsize(gpath),
            "max_abs_diff_vs_numpy_runc": max_diff, "mean_nll_targets_1_to_T-1": nll,
            "argmax": logits.argmax(1).tolist(), "logit_abs_max": float(np.abs(logits).max())}
    with open(os.path.join(a.model_dir, "golden.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(f"wrote {gpath} ({info['bytes']} bytes): T={T}, vocab={V}; max |PyTorch - NumPy run.c| = "
          f"{max_diff:.3g}; mean NLL {nll:.4f}")
    if max_diff > a.tol:
        print("MISMATCH above tolerance", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
