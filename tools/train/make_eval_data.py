#!/usr/bin/python3
"""Tokenizes the held-out split for the C++ evaluation tool.

Writes <model-dir>/heldout.i32: little-endian int32 token ids, the whole held-out split
(the last 5% of the KJV text, see corpus.py) encoded with the model's own vocabulary
(<model-dir>/vocab.json), in order. With --sink-token the file starts with the <sink> id,
followed by the text tokens. Also writes <model-dir>/heldout.json (count, sink id, ...).

  /usr/bin/python3 tools/train/make_eval_data.py --model-dir models/vanilla
  /usr/bin/python3 tools/train/make_eval_data.py --model-dir models/sink_token --sink-token
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import corpus  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", required=True)
    p.add_argument("--sink-token", action="store_true", help="prefix the stream with the <sink> id")
    p.add_argument("--corpus", default=None, help="plain-text corpus; default: KJV via the `bible` program")
    p.add_argument("--max-tokens", type=int, default=0, help="keep only the first N text tokens (0: all)")
    a = p.parse_args(argv)

    bpe = corpus.BPE.load_json(os.path.join(a.model_dir, "vocab.json"))
    _, held = corpus.split_text(corpus.load_kjv(a.corpus))
    ids = bpe.encode(held)
    assert bpe.decode(ids) == held
    if a.max_tokens:
        ids = ids[:a.max_tokens]
    n_text = len(ids)
    if a.sink_token:
        ids = [bpe.sink_id] + ids
    arr = np.asarray(ids, dtype="<i4")
    path = os.path.join(a.model_dir, "heldout.i32")
    arr.tofile(path)
    info = {"file": "heldout.i32", "dtype": "int32 little-endian", "num_tokens": int(arr.size),
            "num_text_tokens": n_text, "starts_with_sink": bool(a.sink_token), "sink_id": bpe.sink_id,
            "vocab_size": bpe.vocab_size, "num_chars": len(held),
            "chars_per_token": len(held) / len(bpe.encode(held)),
            "text_head": held[:80]}
    with open(os.path.join(a.model_dir, "heldout.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(f"wrote {path}: {arr.size} tokens ({n_text} text tokens{', <sink> first' if a.sink_token else ''}), "
          f"{len(held)} chars")


if __name__ == "__main__":
    main()
