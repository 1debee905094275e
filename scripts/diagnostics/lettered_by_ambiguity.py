"""Held-out first-token accuracy of a teacher, split by whether the gold option's first token is shared.

    python scripts/diagnostics/lettered_by_ambiguity.py TEACHER_DIR DATA_DIR [--device cpu] [--split val|train]

Lettered QA (``qa``) and open questions (``open``) of DATA_DIR's held-out videos, per task and in total,
split into "shared" (another option starts with the gold option's first token: "it appears …" / "it
disappears …") and "unique". The data folder must be the one the teacher's tokenizer was built with.
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

import torch

from vamba_eval.models.tokenizer import load_tokenizer
from vamba_eval.train import ckpt
from vamba_eval.train.batches import IGNORE, TrainSet, token_ids
from vamba_eval.train.formats import OPTION_RE
from vamba_eval.train.forward import teacher_forward


def shared_first_token(tok, ex: dict) -> bool:
    first = lambda t: tok(" " + t, add_special_tokens=False)["input_ids"][0]  # noqa: E731
    opts = [m.group(2).strip() for m in map(OPTION_RE.match, ex["prompt"]["user"].split("\n")) if m]
    return [first(o) for o in opts].count(first(ex["answer"])) > 1


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("teacher", type=Path)
    p.add_argument("data", type=Path)
    p.add_argument("--device", default="cpu")
    p.add_argument("--split", default="val", choices=("val", "train"),
                   help="train: about as many examples from the training videos")
    a = p.parse_args()
    dev = torch.device(a.device)
    tok = load_tokenizer(a.data / "tokenizer")
    data = TrainSet(a.data, tok)
    pad = token_ids(tok).video_pad
    model = ckpt.load_qwen2vl(a.teacher, dev).eval()
    res: dict[tuple, list[int]] = collections.defaultdict(lambda: [0, 0])
    for (split, kind, _), pool in sorted(data.pools.items()):
        if split != a.split or kind not in ("qa", "open"):
            continue
        pool = pool[:max(1, len(pool) // 25)] if a.split == "train" else pool  # ≈ the held-out share
        for i in range(0, len(pool), 32):
            idx = pool[i:i + 32]
            batch = data.collate(idx).to(dev)
            with torch.no_grad():
                logits, labels, _ = teacher_forward(model, batch, pad)
            gold = labels[:, 1:]
            first = (gold != IGNORE).float().argmax(1)
            rows = torch.arange(len(idx), device=dev)
            for j, right in zip(idx, (logits[rows, first].argmax(-1) == gold[rows, first]).tolist()):
                ex = data.examples[j]
                group = "shared" if kind == "qa" and shared_first_token(tok, ex) else "unique"
                for key in ((kind, group, ex["source"].split(":")[0]), (kind, group, "TOTAL")):
                    res[key][0] += right
                    res[key][1] += 1
    for key, (hits, n) in sorted(res.items()):
        print(*key, f"{hits}/{n} = {hits / n:.2f}")


if __name__ == "__main__":
    main()
