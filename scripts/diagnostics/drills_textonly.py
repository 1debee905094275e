"""Real-format drills (train/drills.py), text only: does the binding plateau break, and when?

python scripts/diagnostics/drills_textonly.py STEPS HIDDEN LAYERS LR BATCH  (run from the repo root after
`python -m vamba_eval.train data --out build/train`; frames are a blank 2×28×28 clip = 1 video token).
Held-out accuracy is on the single-answer "find" drills (the letter), from releases never trained on.
"""
import sys, time, numpy as np, torch
from pathlib import Path
from vamba_eval.train.batches import encode_example, token_ids, collate_items
from vamba_eval.train.data import task_chunk
from vamba_eval.train.drills import LIST_QUESTION
from vamba_eval.train.stages import new_teacher, load_tokenizer
from vamba_eval.train.forward import teacher_forward, lm_loss
from vamba_eval.train.recipe import preset, ModelRecipe
steps, hidden, layers, lr, bs = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
torch.manual_seed(0); torch.set_num_threads(1)
tok = load_tokenizer(Path("build/train/data")); ids = token_ids(tok)
blank = np.zeros((2, 28, 28, 3), np.uint8)
def drills(seeds):
    out = []
    for task in ["lvbench", "videomme", "mlvu", "longvideobench", "mvbench"]:
        for seed in seeds:
            out += [e for e in task_chunk(task, seed, 0, fast=True, drills=4)[1] if e["kind"] == "drill"]
    return out
train_ex, val_ex = drills(range(2000, 2030)), drills(range(9000, 9004))
val_ex = [e for e in val_ex if LIST_QUESTION not in e["prompt"]["user"]]
enc = lambda e: (*encode_example(tok, e, ids.eos), blank)
train_items, val_items = [enc(e) for e in train_ex], [enc(e) for e in val_ex]
print(f"{len(train_items)} train drills, {len(val_items)} held-out find drills", flush=True)
r = preset("test"); r.model = ModelRecipe(hidden=hidden, layers=layers, intermediate=2 * hidden, vision_embed=32,
                                          vision_depth=1, vision_heads=2)
m = new_teacher(r, tok, 0)
opt = torch.optim.AdamW(m.parameters(), lr=lr)
rng = np.random.default_rng(0)
def acc():
    m.eval(); hits = 0
    with torch.no_grad():
        for i in range(0, len(val_items), 64):
            b = collate_items(val_items[i:i + 64], ids.pad, ids.vision_start)
            logits, labels, _ = teacher_forward(m, b, ids.video_pad)
            first = (labels != -100).float().argmax(1); rows = torch.arange(labels.shape[0])
            hits += int((logits[rows, first - 1].argmax(-1) == labels[rows, first]).sum())
    m.train(); return hits / len(val_items)
t0 = time.time()
for it in range(steps):
    b = collate_items([train_items[int(i)] for i in rng.choice(len(train_items), bs)], ids.pad, ids.vision_start)
    logits, labels, _ = teacher_forward(m, b, ids.video_pad)
    loss = lm_loss(logits, labels); loss.backward(); opt.step(); opt.zero_grad()
    if it % 100 == 0: print(it, round(float(loss.detach()), 3), "held-out find acc", round(acc(), 3), round(time.time() - t0), flush=True)
print("final", acc())
