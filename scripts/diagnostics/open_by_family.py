"""Which video facts has a teacher learnt? Held-out open questions (no options) by question family.

python scripts/diagnostics/open_by_family.py TEACHER_DIR [SEEDS]   (CPU is fine: inference only)
Exact = every token of the gold option text right (teacher-forced argmax); "lettered" = the first
reply token of the same question in its official lettered format. Releases 9000… are never trained on.
"""
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from vamba_eval.train import ckpt
from vamba_eval.train.batches import IGNORE, collate_items, encode_example, token_ids
from vamba_eval.train.data import task_chunk
from vamba_eval.train.forward import batch_vision_attention, teacher_forward
from vamba_eval.train.stages import load_tokenizer_from

folder, seeds = Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 3
tok = load_tokenizer_from(folder)
ids = token_ids(tok)
model = ckpt.load_qwen2vl(folder).eval()
batch_vision_attention(model)
stats = defaultdict(lambda: [0, 0, 0, 0])  # family → [open exact, open n, lettered hits, lettered n]


def family(question: str) -> str:
    q = re.sub(r"\b(red|green|blue|yellow|cyan|magenta|white|black|orange|purple)\b", "C", question)
    q = re.sub(r"\b[A-Z]{3}\b|\b\d+\b", "X", q)
    return " ".join(q.split()[:7])


def run(items, kinds):
    for shape in {tuple(f.shape) for _, _, f in items}:
        group = [(it, k) for it, k in zip(items, kinds) if tuple(it[2].shape) == shape]
        for i in range(0, len(group), 32):
            part = group[i:i + 32]
            b = collate_items([it for it, _ in part], ids.pad, ids.vision_start)
            with torch.no_grad():
                logits, labels, _ = teacher_forward(model, b, ids.video_pad)
            gold = labels[:, 1:]
            right = (logits[:, :-1].argmax(-1) == gold) | (gold == IGNORE)
            first = (gold != IGNORE).float().argmax(1)
            for row, (_, (fam, kind)) in enumerate(part):
                s = stats[fam]
                if kind == "open":
                    s[0] += int(right[row].all()); s[1] += 1
                else:
                    s[2] += int(right[row, first[row]]); s[3] += 1


for task in ["lvbench", "videomme", "mlvu", "longvideobench", "mvbench"]:
    for seed in range(9000, 9000 + seeds):
        frames, examples = task_chunk(task, seed, 0, fast=True)
        items, kinds = [], []
        for e in examples:
            if e["kind"] not in ("open", "qa"):
                continue
            q = e["prompt"]["user"]
            m = re.search(r"Question: (.+?)\n", q) or re.search(r"\n([^\n]+\?)\n", q)
            items.append((*encode_example(tok, e, ids.eos), frames[e["video"]]))
            kinds.append((f"{task}: {family(m.group(1) if m else q)}", e["kind"]))
        run(items, kinds)
print(f"{'family':75s} {'open exact':>11s} {'lettered':>9s}")
for fam, (oe, on, lh, ln) in sorted(stats.items()):
    print(f"{fam[:75]:75s} {oe:4d}/{on:<4d} {lh / max(1, ln):9.2f}")
tot = np.array(list(stats.values())).sum(0)
print(f"{'all':75s} {tot[0] / max(1, tot[1]):11.3f} {tot[2] / max(1, tot[3]):9.3f}")
