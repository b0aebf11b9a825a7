"""Writes the committed sample that pins the C++ BPE encoder (examples/toy_transformer/toy/tokenizer.hpp)
to this tokenizer: text -> ids by corpus.BPE, for held-out lines, awkward hand-written strings
(whitespace runs, Unicode whitespace, non-ASCII text) and seeded random byte strings (NUL, control
characters, invalid UTF-8 via corpus.BPE.encode_bytes).

Needs only the standard library and corpus.py (no PyTorch):

    /usr/bin/python3 tools/train/make_tokenizer_sample.py \
        --model-dir models/sink_token --out tests/toy_transformer/data/bpe_sample.tsv

Output: '#' comment lines, then one line per sample: the text's bytes in hex, a tab, the ids
separated by spaces, a tab, the byte lengths of its pre-tokens (corpus.pretokenize) separated by
spaces (all fields empty for the empty text). The pre-token boundaries pin down the character
classes (Unicode whitespace, ill-formed bytes) even where this vocabulary's ids cannot tell.
"""

from __future__ import annotations

import argparse
import array
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corpus import BPE, pretokenize  # noqa: E402

HAND_WRITTEN = [
    "", " ", "  ", "   ", "\n", "\n\n", " \n", "\n ", "a", " a", "  a", "   a", "a ", "a  ", "a  b", "a   b",
    "a \n b", "a\n\n b", " \t\n x", "\t\tx", "x\t", "x\r\n", "\r\n\r\n", "1 In the beginning", "12:34 56,7",
    "abc123def", "  42", "...", " ... ", "a, b; c: d. e! f? (g) [h] {i}", "don't", "LORD'S", "O LORD,",
    "100,000", "3.14159", "x--y", "x -- y", "caf\u00e9 na\u00efve", "\u00c9glise",
    "\u65e5\u672c\u8a9e \u30c6\u30ad\u30b9\u30c8",
    "emoji \U0001F600\U0001F44D ok", "\u00a0x", "x\u00a0", "a\u2003b", "a \u2003 b", "\u3000\u3000y", "x\u3000\u3000",
    "\x1c\x1d\x1e\x1f x", "a\x85b", "a\u200bb", "a\u180eb", "\u2028\u2029", "\u202fx\u205f", "\x0b\x0c",
    "\u1680z", "a\u00adb", "\ufeffBOM", "Z\u0301", " \u00e9t\u00e9", " 12", " !", " \u00e9",
    "In the beginning God created the heaven and the earth.\n2 And the earth was without form, and void;",
    "the" * 60, " " + "and" * 40 + " x", " " * 70 + "x", "\n" * 40 + "y", "12" * 40, " " + "." * 60 + " z",
]

HAND_WRITTEN_BYTES = [
    b"\x00", b"a\x00b", b" \x00 ", b"\x00\x00\n", b"\x01\x02\x7f", b"\xff", b"\xff\xfe", b"ab\xffcd ef",
    b" \xff", b"\xff ", b"\x80 x", b"\xc3", b"\xc3(", b"\xe2\x82", b"\xe2\x82\xac", b"\xe2\x82\xe2\x82\xac",
    b"\xed\xa0\x80", b"\xed\x9f\xbf", b"\xc0\xaf", b"\xc1\xbf", b"\xe0\x80\x80", b"\xe0\xa0\x80",
    b"\xf0\x8f\xbf\xbf", b"\xf0\x90\x80\x80", b"\xf4\x8f\xbf\xbf", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80",
    b"\xf8\x88\x80\x80\x80", b"a\xe0\x80\xa0b", b"\xe0\x81\x81x", b"a\xf0\x80\x80\xa0b", b"a\xc0\xa0b",
    b"\xed\xa0\x80 x", b"a \xf4\x90\x80\x80", b" \xc2\xa0\xc2\xa0x", b"word\xc2", b"\xa0\xa0 the",
    b" the\xe3\x80\x80 the",
]

# Characters the random strings draw from, with weights: mostly what the corpus holds, plus
# everything the pre-tokenizer treats specially.
ALPHABET = (
    [(c, 8) for c in "etaoinshrdlu"] + [(c, 2) for c in "ETAOINSHRDLUcmfwypvbgkjqxzCMFWYPVBGKJQXZ"] +
    [(c, 2) for c in "0123456789"] + [(" ", 20), ("  ", 3), ("\n", 4), ("\t", 2), ("\r", 1)] +
    [(c, 2) for c in ".,;:!?'\"()-[]{}*/&%$#@"] +
    [(c, 1) for c in "\u00a0\u2003\u3000\x85\x0b\x0c\x1c\u2028\u00e9\u00fc\u00df\u65e5\u0416\U0001F600\u200b\x00\x07"]
)


def random_bytes(rng: random.Random) -> bytes:
    chars, weights = zip(*ALPHABET)
    text = "".join(rng.choices(chars, weights, k=rng.randint(0, 60))).encode("utf-8")
    data = bytearray(text)
    for _ in range(rng.choice([0, 0, 1, 3])):  # splice in arbitrary bytes: mostly ill-formed UTF-8
        at = rng.randint(0, len(data))
        data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 3)))
    return bytes(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", default="models/sink_token")
    parser.add_argument("--out", required=True)
    parser.add_argument("--lines", type=int, default=120, help="held-out lines to sample")
    parser.add_argument("--random", type=int, default=300, help="random byte strings")
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args()

    bpe = BPE.load_json(os.path.join(args.model_dir, "vocab.json"))
    ids = array.array("i")
    with open(os.path.join(args.model_dir, "heldout.i32"), "rb") as f:
        ids.frombytes(f.read())
    if sys.byteorder != "little":
        ids.byteswap()
    heldout = b"".join(bpe.piece(i) for i in ids if i != bpe.sink_id)
    lines = heldout.splitlines(keepends=True)
    step = max(1, len(lines) // args.lines)

    samples = [t.encode("utf-8") for t in HAND_WRITTEN] + HAND_WRITTEN_BYTES
    samples += lines[::step][: args.lines]
    samples.append(heldout[100_000:104_000])  # a stretch of verses, newlines included
    rng = random.Random(args.seed)
    samples += [random_bytes(rng) for _ in range(args.random)]

    with open(args.out, "w", encoding="ascii", newline="\n") as f:
        f.write(f"# {len(samples)} samples: text bytes in hex <TAB> ids from tools/train/corpus.py's BPE "
                "<TAB> pre-token byte lengths\n")
        f.write(f"# made by: /usr/bin/python3 tools/train/make_tokenizer_sample.py --model-dir {args.model_dir} "
                f"--out {args.out} --lines {args.lines} --random {args.random} --seed {args.seed}\n")
        for data in samples:
            encoded = bpe.encode_bytes(data)
            assert b"".join(bpe.piece(i) for i in encoded) == data, data
            lengths = [len(w.encode("utf-8", "surrogateescape"))
                       for w in pretokenize(data.decode("utf-8", "surrogateescape"))]
            assert sum(lengths) == len(data), data
            f.write(data.hex() + "\t" + " ".join(map(str, encoded)) + "\t" + " ".join(map(str, lengths)) + "\n")
    print(f"wrote {len(samples)} samples to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
