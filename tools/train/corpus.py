"""KJV corpus loading, the deterministic train/held-out split and a small byte-level BPE.

Corpus
------
Debian's ``bible-kjv-text`` ships the King James Bible only as ``/usr/lib/bible.data``,
a compressed, indexed file ("EC02Compressed Data File") of Chip Chapin's Bible Retrieval
System; it is not plain text. The ``bible`` program from the ``bible-kjv`` package (which
depends on ``bible-kjv-text``) decodes it, so ``load_kjv()`` runs::

    bible -l100000 Gen1:1-Rev22:21

(``-l100000``: one verse per output line, no re-wrapping) and normalises the result:
leading blanks are stripped and empty lines dropped, which leaves chapter headers
("Genesis 1") and numbered verses ("1 In the beginning God created ..."), one per line,
4,233,656 characters of ASCII. ``--corpus FILE`` in the scripts reads any other plain text file.

Split
-----
The last 5% of the characters, moved forward to the next line start, are held out
(``split_text``). BPE and training use only the first part.

Vocabulary
----------
ids 0..255 are the raw bytes, ids 256..256+M-1 the merges in the order learned, and the
last id is ``<sink>``, a token that never occurs in text. Text is first cut into
pre-tokens (GPT-2 style: an optional leading space plus a run of letters, digits or
other symbols; whitespace runs), merges never cross pre-token boundaries, and ties
between equally frequent pairs are broken by the smaller (left id, right id), so
training is deterministic.
"""

from __future__ import annotations

import collections
import json
import re
import subprocess
from typing import Dict, List, Sequence, Tuple

PRETOKEN_RE = re.compile(r" ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+")
SINK_TEXT = "<sink>"


def load_kjv(path: str | None = None) -> str:
    """Returns the normalised corpus text (see module docstring)."""
    if path:
        with open(path, "r", encoding="utf-8") as f:
            raw = f.read()
    else:
        raw = subprocess.run(["bible", "-l100000", "Gen1:1-Rev22:21"], check=True,
                             stdout=subprocess.PIPE).stdout.decode("ascii")
    lines = [ln.strip() for ln in raw.split("\n")]
    return "\n".join(ln for ln in lines if ln) + "\n"


def split_text(text: str, heldout_frac: float = 0.05) -> Tuple[str, str]:
    """First (1 - frac) of the characters for training, the rest held out, cut at a line start."""
    cut = int(len(text) * (1.0 - heldout_frac))
    cut = text.index("\n", cut) + 1
    return text[:cut], text[cut:]


def pretokenize(text: str) -> List[str]:
    return PRETOKEN_RE.findall(text)


class BPE:
    """Byte-level BPE: ids 0..255 bytes, then merges, then ``<sink>``."""

    def __init__(self, merges: Sequence[Tuple[int, int]]):
        self.merges: List[Tuple[int, int]] = [tuple(m) for m in merges]
        self.ranks: Dict[Tuple[int, int], int] = {m: i for i, m in enumerate(self.merges)}
        self.pieces: List[bytes] = [bytes([b]) for b in range(256)]
        for a, b in self.merges:
            self.pieces.append(self.pieces[a] + self.pieces[b])
        self.sink_id = len(self.pieces)
        self.vocab_size = self.sink_id + 1
        self._cache: Dict[str, List[int]] = {}

    # -- training ---------------------------------------------------------------------
    @staticmethod
    def train(text: str, num_merges: int) -> "BPE":
        words = collections.Counter(pretokenize(text))
        seqs: List[List[int]] = []
        freqs: List[int] = []
        for w, c in sorted(words.items()):
            seqs.append(list(w.encode("utf-8")))
            freqs.append(c)
        pair_count: Dict[Tuple[int, int], int] = collections.defaultdict(int)
        pair_words: Dict[Tuple[int, int], set] = collections.defaultdict(set)
        for wi, s in enumerate(seqs):
            for p in zip(s, s[1:]):
                pair_count[p] += freqs[wi]
                pair_words[p].add(wi)
        merges: List[Tuple[int, int]] = []
        next_id = 256
        for _ in range(num_merges):
            if not pair_count:
                break
            # most frequent pair; ties -> smallest pair (deterministic)
            best = min(pair_count.items(), key=lambda kv: (-kv[1], kv[0]))[0]
            if pair_count[best] < 2:
                break
            merges.append(best)
            new = next_id
            next_id += 1
            for wi in sorted(pair_words.pop(best, ())):
                s = seqs[wi]
                f = freqs[wi]
                for p in zip(s, s[1:]):
                    pair_count[p] -= f
                    if pair_count[p] <= 0:
                        del pair_count[p]
                out: List[int] = []
                i = 0
                while i < len(s):
                    if i + 1 < len(s) and s[i] == best[0] and s[i + 1] == best[1]:
                        out.append(new)
                        i += 2
                    else:
                        out.append(s[i])
                        i += 1
                seqs[wi] = out
                for p in zip(out, out[1:]):
                    pair_count[p] += f
                    pair_words[p].add(wi)
            pair_count.pop(best, None)
        return BPE(merges)

    # -- encoding / decoding ----------------------------------------------------------
    def _encode_word(self, w: str) -> List[int]:
        ids = self._cache.get(w)
        if ids is not None:
            return ids
        s = list(w.encode("utf-8", "surrogateescape"))  # see encode_bytes; plain text has no surrogates
        while len(s) > 1:
            best_rank, best_i = None, -1
            for i in range(len(s) - 1):
                r = self.ranks.get((s[i], s[i + 1]))
                if r is not None and (best_rank is None or r < best_rank):
                    best_rank, best_i = r, i
            if best_rank is None:
                break
            pair = (s[best_i], s[best_i + 1])
            new = 256 + best_rank
            out: List[int] = []
            i = 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == pair:
                    out.append(new)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            s = out
        self._cache[w] = s
        return s

    def encode(self, text: str) -> List[int]:
        ids: List[int] = []
        for w in pretokenize(text):
            ids.extend(self._encode_word(w))
        return ids

    def encode_bytes(self, data: bytes) -> List[int]:
        """``encode`` for any bytes: bytes that are not well-formed UTF-8 become lone
        surrogates ("surrogateescape"), each one character of the ``[^\\sA-Za-z0-9]`` class,
        and are encoded back to the same byte. For valid UTF-8, ``encode(data.decode())``."""
        return self.encode(data.decode("utf-8", "surrogateescape"))

    def piece(self, i: int) -> bytes:
        return SINK_TEXT.encode() if i == self.sink_id else self.pieces[i]

    def decode(self, ids: Sequence[int]) -> str:
        return b"".join(self.piece(int(i)) for i in ids).decode("utf-8", errors="replace")

    # -- files ------------------------------------------------------------------------
    def save_json(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump({"scheme": "byte-level BPE; ids 0-255 = bytes, 256.. = merges, last = <sink>",
                       "pretokenizer": PRETOKEN_RE.pattern,
                       "vocab_size": self.vocab_size, "sink_id": self.sink_id,
                       "merges": [list(m) for m in self.merges]}, f)

    @staticmethod
    def load_json(path: str) -> "BPE":
        with open(path) as f:
            d = json.load(f)
        bpe = BPE([tuple(m) for m in d["merges"]])
        assert bpe.sink_id == d["sink_id"] and bpe.vocab_size == d["vocab_size"]
        return bpe

    def save_llama2c_tokenizer(self, path: str) -> None:
        """llama2.c tokenizer.bin: int32 max_token_length, then per id: float32 score,
        int32 byte length, bytes. Score: -rank for merge id 256+rank (run.c's encoder
        merges the highest score first), 0 for bytes and for <sink>."""
        import struct
        pieces = [self.piece(i) for i in range(self.vocab_size)]
        with open(path, "wb") as f:
            f.write(struct.pack("<i", max(len(p) for p in pieces)))
            for i, p in enumerate(pieces):
                score = -float(i - 256) if 256 <= i < self.sink_id else 0.0
                f.write(struct.pack("<fi", score, len(p)))
                f.write(p)
