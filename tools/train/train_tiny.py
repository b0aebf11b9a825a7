#!/usr/bin/python3
"""Trains a tiny llama2.c-compatible Llama on the KJV Bible (byte-level BPE), optionally
with a dedicated <sink> token at position 0 of every window, and exports it in the
llama2.c legacy checkpoint format. See models/README.md.

Example (the two committed runs):
  nice -n 10 /usr/bin/python3 tools/train/train_tiny.py --out models/vanilla --seed 1
  nice -n 10 /usr/bin/python3 tools/train/train_tiny.py --out models/sink_token --seed 1 --sink-token
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import corpus  # noqa: E402
from model import Config, Transformer, export_llama2c  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (model.bin, tokenizer.bin, vocab.json, ...)")
    p.add_argument("--corpus", default=None, help="plain-text corpus; default: KJV via the `bible` program")
    p.add_argument("--sink-token", action="store_true", help="prepend <sink> at position 0 of every window")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--steps", type=int, default=4500)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--hidden-dim", type=int, default=352)
    p.add_argument("--n-layers", type=int, default=6)
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--n-kv-heads", type=int, default=2)
    p.add_argument("--merges", type=int, default=511, help="BPE merges; vocab = 256 + merges + 1")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--min-lr-frac", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.3)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--eval-windows", type=int, default=32)
    p.add_argument("--probe-every", type=int, default=1000, help="attention-mass probe (0: only at the end)")
    p.add_argument("--probe-windows", type=int, default=100)
    p.add_argument("--export-every", type=int, default=500)
    p.add_argument("--max-minutes", type=float, default=0.0, help="safety cap: stop and export after this long")
    p.add_argument("--stop-after", type=int, default=0,
                   help="stop and export after this many steps while keeping the --steps LR schedule "
                        "(reproduces a run that the time cap stopped)")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def lr_at(step: int, a) -> float:
    """Linear warm-up to --lr over --warmup steps, then cosine decay to min-lr-frac * lr."""
    if step < a.warmup:
        return a.lr * (step + 1) / a.warmup
    prog = min(1.0, (step - a.warmup) / max(1, a.steps - a.warmup))
    return a.lr * (a.min_lr_frac + (1 - a.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * prog)))


def make_batch(tokens: np.ndarray, offsets, T: int, sink_id: int | None):
    """Windows at the given offsets. Vanilla: x = tok[o:o+T], y = tok[o+1:o+T+1].
    Sink: x = [<sink>] + tok[o:o+T-1], y = [ignore] + tok[o+1:o+T] (the sink is never a target)."""
    if sink_id is None:
        x = np.stack([tokens[o:o + T] for o in offsets])
        y = np.stack([tokens[o + 1:o + T + 1] for o in offsets])
    else:
        x = np.stack([np.concatenate([[sink_id], tokens[o:o + T - 1]]) for o in offsets])
        y = np.stack([np.concatenate([[-1], tokens[o + 1:o + T]]) for o in offsets])
    return torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64))


@torch.no_grad()
def heldout_loss(model, held: np.ndarray, offsets, T, sink_id, bs=8) -> float:
    model.eval()
    tot, n = 0.0, 0
    for i in range(0, len(offsets), bs):
        x, y = make_batch(held, offsets[i:i + bs], T, sink_id)
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), ignore_index=-1, reduction="sum")
        tot += loss.item()
        n += int((y >= 0).sum())
    model.train()
    return tot / n


@torch.no_grad()
def attention_probe(model, held: np.ndarray, T: int, n_windows: int, sink_id, seed: int = 1234, bs: int = 10):
    """Per layer x head: mean softmax mass on position 0 for queries t >= 32 (T=256) and over
    all queries (T=64, Gu et al.'s alpha_0), on fixed held-out windows. With a sink token
    position 0 is <sink>; the mass on position 1 (first text token) is reported too."""
    model.eval()
    rng = np.random.default_rng(seed)
    res = {}
    for TT in (T, 64):
        offs = rng.integers(0, len(held) - TT - 1, size=n_windows)
        cfg = model.cfg
        far0 = torch.zeros(cfg.n_layers, cfg.n_heads, dtype=torch.float64)
        far1 = torch.zeros_like(far0)
        all0 = torch.zeros_like(far0)
        for i in range(0, n_windows, bs):
            x, _ = make_batch(held, offs[i:i + bs], TT, sink_id)
            _, probs = model(x, want_probs=True)
            for li, p in enumerate(probs):  # p [B, H, T, T]
                far0[li] += p[:, :, 32:, 0].double().mean(dim=2).sum(0)
                far1[li] += p[:, :, 32:, 1].double().mean(dim=2).sum(0)
                all0[li] += p[:, :, :, 0].double().mean(dim=2).sum(0)
        far0 /= n_windows
        far1 /= n_windows
        all0 /= n_windows
        uniform_far = float(np.mean([1.0 / (t + 1) for t in range(32, TT)]))
        uniform_all = float(np.mean([1.0 / (t + 1) for t in range(TT)]))
        res[f"T{TT}"] = {
            "far_pos0": far0.tolist(), "far_pos1": far1.tolist(), "all_pos0": all0.tolist(),
            "uniform_far": uniform_far, "uniform_all": uniform_all,
            "heads_far_pos0_gt_0.3": int((far0 > 0.3).sum()),
            "heads_all_pos0_gt_0.3": int((all0 > 0.3).sum()),
        }
    model.train()
    return res


def format_probe(res, label: str) -> str:
    out = []
    for key, r in res.items():
        out.append(f"[probe {label}] {key}: mass on position 0, queries t>=32 (uniform {r['uniform_far']:.4f}); "
                   f"heads > 0.3: {r['heads_far_pos0_gt_0.3']} (t>=32), {r['heads_all_pos0_gt_0.3']} (all queries, "
                   f"uniform {r['uniform_all']:.4f})")
        for li, row in enumerate(r["far_pos0"]):
            cells = "  ".join(f"{v:.3f}" for v in row)
            cells1 = "  ".join(f"{v:.3f}" for v in r["far_pos1"][li])
            cellsa = "  ".join(f"{v:.3f}" for v in r["all_pos0"][li])
            out.append(f"[probe {label}]   layer {li}: pos0 t>=32 [{cells}]   pos1 t>=32 [{cells1}]   pos0 all [{cellsa}]")
    return "\n".join(out)


def main(argv=None):
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    os.makedirs(a.out, exist_ok=True)
    t_start = time.time()

    def say(msg):
        print(msg, flush=True)

    say(f"args: {json.dumps(vars(a))}")
    say(f"torch {torch.__version__}, threads {torch.get_num_threads()}")

    # data + vocabulary (deterministic)
    text = corpus.load_kjv(a.corpus)
    train_text, held_text = corpus.split_text(text)
    bpe = corpus.BPE.train(train_text, a.merges)
    train_tok = np.array(bpe.encode(train_text), dtype=np.int32)
    held_tok = np.array(bpe.encode(held_text), dtype=np.int32)
    bpe.save_json(os.path.join(a.out, "vocab.json"))
    bpe.save_llama2c_tokenizer(os.path.join(a.out, "tokenizer.bin"))
    sink_id = bpe.sink_id if a.sink_token else None
    say(f"corpus {len(text)} chars: train {len(train_text)} chars / {len(train_tok)} tokens, "
        f"held-out {len(held_text)} chars / {len(held_tok)} tokens; vocab {bpe.vocab_size} "
        f"(sink id {bpe.sink_id}); {len(train_text) / len(train_tok):.3f} chars/token "
        f"[{time.time() - t_start:.1f}s]")

    # unigram entropy of the training-token distribution (nats/token, bits/char)
    counts = np.bincount(train_tok, minlength=bpe.vocab_size).astype(np.float64)
    pr = counts[counts > 0] / counts.sum()
    H_tok = float(-(pr * np.log(pr)).sum())
    cpt_held = len(held_text) / len(held_tok)
    say(f"unigram entropy (train tokens): {H_tok:.4f} nats/token = "
        f"{H_tok / math.log(2) / (len(train_text) / len(train_tok)):.4f} bits/char")

    cfg = Config(dim=a.dim, hidden_dim=a.hidden_dim, n_layers=a.n_layers, n_heads=a.n_heads,
                 n_kv_heads=a.n_kv_heads, vocab_size=bpe.vocab_size, seq_len=a.seq_len)
    torch.manual_seed(a.seed)
    model = Transformer(cfg)
    n_params = model.num_params()
    say(f"config {cfg}; params {n_params} ({n_params - cfg.vocab_size * cfg.dim} non-embedding); "
        f"checkpoint {28 + 4 * (n_params + cfg.seq_len * cfg.head_size)} bytes")

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8)

    T, B = a.seq_len, a.batch_size
    data_rng = np.random.default_rng(a.seed)  # same offsets in both runs
    eval_rng = np.random.default_rng(4321)
    eval_offs = eval_rng.integers(0, len(held_tok) - T - 1, size=a.eval_windows)
    out_model = os.path.join(a.out, "model.bin")

    metrics = {"args": vars(a), "config": {k: getattr(cfg, k) for k in
               ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len")},
               "params": n_params, "unigram_nats_per_token": H_tok,
               "train_chars_per_token": len(train_text) / len(train_tok),
               "heldout_chars_per_token": cpt_held, "evals": []}

    t0 = time.time()
    smooth = None
    step = 0
    stopped_early = False
    model.train()
    for step in range(a.steps):
        lr = lr_at(step, a)
        for g in opt.param_groups:
            g["lr"] = lr
        offs = data_rng.integers(0, len(train_tok) - T - 1, size=B)
        x, y = make_batch(train_tok, offs, T, sink_id)
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), ignore_index=-1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), a.grad_clip)
        opt.step()
        lv = loss.item()
        smooth = lv if smooth is None else 0.95 * smooth + 0.05 * lv
        done = step + 1
        el = time.time() - t0
        if done % a.log_every == 0 or done == 1:
            tps = done * B * T / el
            eta = el / done * (a.steps - done)
            say(f"step {done}/{a.steps} loss {lv:.4f} (avg {smooth:.4f}) lr {lr:.2e} gnorm {float(gnorm):.2f} "
                f"{tps:.0f} tok/s {el / done:.3f} s/step elapsed {el / 60:.1f} min ETA {eta / 60:.1f} min")
        if done % a.eval_every == 0 or done == a.steps:
            hl = heldout_loss(model, held_tok, eval_offs, T, sink_id)
            say(f"eval step {done}: held-out loss {hl:.4f} nats/token = {hl / math.log(2) / cpt_held:.4f} bits/char "
                f"(train avg {smooth:.4f}; unigram {H_tok:.4f})")
            metrics["evals"].append({"step": done, "heldout": hl, "train_avg": smooth, "minutes": el / 60})
        if a.probe_every and done % a.probe_every == 0 and done != a.steps:
            say(format_probe(attention_probe(model, held_tok, T, a.probe_windows, sink_id), f"step {done}"))
        if a.export_every and done % a.export_every == 0:
            export_llama2c(model, out_model)
            say(f"exported {out_model} at step {done}")
        if a.stop_after and done >= a.stop_after and done < a.steps:
            say(f"--stop-after {a.stop_after} reached; stopping")
            stopped_early = True
            break
        if a.max_minutes and (time.time() - t_start) / 60 > a.max_minutes:
            say(f"time cap of {a.max_minutes} min reached at step {done}; stopping "
                f"(reproduce with --steps {a.steps} --stop-after {done})")
            stopped_early = True
            break

    done = step + 1
    train_min = (time.time() - t0) / 60
    export_llama2c(model, out_model)
    hl = heldout_loss(model, held_tok, eval_offs, T, sink_id)
    # a larger final held-out evaluation: 200 fixed windows
    big_offs = np.random.default_rng(999).integers(0, len(held_tok) - T - 1, size=200)
    hl_big = heldout_loss(model, held_tok, big_offs, T, sink_id)
    probe = attention_probe(model, held_tok, T, a.probe_windows, sink_id)
    say(format_probe(probe, "final"))
    metrics.update({"steps_done": done, "stopped_early": stopped_early, "train_minutes": train_min,
                    "final_train_avg": smooth, "final_heldout_32": hl, "final_heldout_200": hl_big,
                    "final_heldout_200_bits_per_char": hl_big / math.log(2) / cpt_held, "probe": probe})
    with open(os.path.join(a.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    say(f"final: step {done}, {train_min:.1f} min training, train loss (avg) {smooth:.4f}, held-out loss "
        f"{hl_big:.4f} nats/token ({hl_big / math.log(2) / cpt_held:.4f} bits/char) on 200 windows; "
        f"wrote {out_model}")


if __name__ == "__main__":
    main()
