"""Real-format drills, text only, on the GPU: which model size / lr breaks the binding plateau, and when?

python scripts/diagnostics/drills_sweep.py SECONDS SEEDS H,L,LR,BATCH [H,L,LR,BATCH ...]

Drills (train/drills.py) of the five demo tasks from releases 2000 … 2000+SEEDS (held out: 9000 … 9003),
a BPE of our own trained on them, a blank 2×28×28 clip (1 video token). One process per config trains a
tiny Qwen2-VL (`transformers`, via stages.new_teacher) for SECONDS on the same GPU and prints held-out
accuracy every 250 steps: "find" (the single answer letter) and "list" (every letter of a listing reply).
The last lines are a table. Run on the device with `scripts/device_diag.sh drills_sweep.py …`.
"""
import contextlib
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

TASKS = ["lvbench", "videomme", "mlvu", "longvideobench", "mvbench"]


def _chunk(args):
    from vamba_eval.train.data import task_chunk

    task, seed = args
    return [e for e in task_chunk(task, seed, 0, fast=True, drills=4)[1] if e["kind"] == "drill"]


def build(seeds: int, folder: Path):
    from vamba_eval.train.drills import LIST_QUESTION
    from vamba_eval.train.tokenizer import train_bpe, training_texts

    with mp.get_context("spawn").Pool(max(1, (mp.cpu_count() or 2) - 2)) as pool:
        train = sum(pool.map(_chunk, [(t, s) for t in TASKS for s in range(2000, 2000 + seeds)]), [])
        val = sum(pool.map(_chunk, [(t, s) for t in TASKS for s in range(9000, 9004)]), [])
    tok = train_bpe(training_texts(train), 1024)
    tok.save_pretrained(str(folder))
    find = [e for e in val if LIST_QUESTION not in e["prompt"]["user"]]
    listing = [e for e in val if LIST_QUESTION in e["prompt"]["user"]]
    return train, find, listing


def worker(tag, folder, train, find, listing, seconds, out):
    from transformers import PreTrainedTokenizerFast

    from vamba_eval.train.batches import IGNORE, collate_items, encode_example, token_ids
    from vamba_eval.train.forward import lm_loss, teacher_forward
    from vamba_eval.train.recipe import ModelRecipe, preset
    from vamba_eval.train.stages import new_teacher

    h, layers, lr, bs = tag.split(",")
    h, layers, lr, bs = int(h), int(layers), float(lr), int(bs)
    torch.manual_seed(0)
    dev = torch.device(os.environ.get("DIAG_DEVICE", "cuda"))  # cpu: a smoke test
    cast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if dev.type == "cuda" else contextlib.nullcontext
    tok = PreTrainedTokenizerFast.from_pretrained(folder)
    ids = token_ids(tok)
    letters = torch.tensor(tok.convert_tokens_to_ids(list("ABCDEFGH")), device=dev)
    blank = np.zeros((2, 28, 28, 3), np.uint8)
    enc = lambda e: (*encode_example(tok, e, ids.eos), blank)  # noqa: E731
    tr, fi, li = [enc(e) for e in train], [enc(e) for e in find], [enc(e) for e in listing]
    r = preset("test")
    r.model = ModelRecipe(hidden=h, layers=layers, intermediate=3 * h, vision_embed=32, vision_depth=1, vision_heads=2)
    m = new_teacher(r, tok, 0).to(dev)
    opt = torch.optim.AdamW(m.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    rng = np.random.default_rng(0)

    @torch.no_grad()
    def acc(items, first_only):
        m.eval()
        hits = n = 0
        for i in range(0, len(items), 128):
            b = collate_items(items[i:i + 128], ids.pad, ids.vision_start).to(dev)
            with cast():
                logits, labels, _ = teacher_forward(m, b, ids.video_pad)
            pred = logits[:, :-1].argmax(-1)
            gold = labels[:, 1:]
            sel = torch.isin(gold, letters) & (gold != IGNORE)
            if first_only:
                first = (gold != IGNORE).float().argmax(1, keepdim=True)
                sel = sel & (torch.arange(gold.shape[1], device=dev)[None] == first)
            hits += int((pred == gold)[sel].sum())
            n += int(sel.sum())
        m.train()
        return hits / max(1, n)

    t0, step, rows = time.time(), 0, []
    while time.time() - t0 < seconds:
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 100)
        b = collate_items([tr[int(i)] for i in rng.choice(len(tr), bs)], ids.pad, ids.vision_start).to(dev)
        with cast():
            logits, labels, _ = teacher_forward(m, b, ids.video_pad)
            loss = lm_loss(logits, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        if step % 250 == 0:
            rows.append((step, round(time.time() - t0), float(loss.detach()), acc(fi, True), acc(li, False)))
            print(f"[{tag}] step {step} {rows[-1][1]}s loss {rows[-1][2]:.3f} find {rows[-1][3]:.3f} "
                  f"list {rows[-1][4]:.3f}", flush=True)
    out.put((tag, rows))


def main() -> None:
    seconds, seeds, tags = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    folder = Path("/tmp/drills-sweep")
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    train, find, listing = build(seeds, folder)
    print(f"{len(train)} train drills, {len(find)} held-out find, {len(listing)} held-out list "
          f"({time.time() - t0:.0f}s)", flush=True)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(t, str(folder), train, find, listing, seconds, out)) for t in tags]
    for p in procs:
        p.start()
    results = dict(out.get() for _ in procs)
    for p in procs:
        p.join()
    print(f"{'config (hidden,layers,lr,batch)':34s} {'steps':>6s} {'find@end':>9s} {'list@end':>9s} "
          f"{'best find':>9s} first step find>=0.6")
    for tag, rows in results.items():
        if not rows:
            print(f"{tag:34s} (no evaluation)")
            continue
        cross = next((s for s, _, _, f, _ in rows if f >= 0.6), None)
        print(f"{tag:34s} {rows[-1][0]:6d} {rows[-1][3]:9.3f} {rows[-1][4]:9.3f} {max(r[3] for r in rows):9.3f} "
              f"{cross}")


if __name__ == "__main__":
    main()
