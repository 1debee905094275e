"""Diagnostic: can the teacher pipeline learn 'What colour is the background?' on 1-scene videos?"""
import time, sys, numpy as np, torch
from pathlib import Path
from vamba_eval.synth.world import random_script, COLOR_NAMES
from vamba_eval.train.data import synth_frames
from vamba_eval.video import FrameSpec
from vamba_eval.train.batches import encode_example, token_ids, collate_items
from vamba_eval.train.formats import prompt_dict
from vamba_eval.types import Prompt
from vamba_eval.train.stages import new_teacher, load_tokenizer, teacher_step
from vamba_eval.train.forward import teacher_forward, batch_vision_attention
from vamba_eval.train.recipe import preset, ModelRecipe
torch.manual_seed(0); torch.set_num_threads(2)
tok = load_tokenizer(Path("build/train/data")); ids = token_ids(tok)
spec = FrameSpec(num_frames=8, max_edge=168)
rng = np.random.default_rng(0)
def example():
    s = random_script(rng, 10, n_scenes=1)
    frames, _ = synth_frames((s, 160, 96, 4), spec)
    bg = s.scenes[0].background
    opts = [bg] + [c for c in rng.permutation(COLOR_NAMES) if c != bg][:3]
    order = rng.permutation(4); opts = [opts[i] for i in order]; gold = "ABCD"[list(order).index(0)]
    user = "What colour is the background?\n" + "\n".join(f"({'ABCD'[i]}) {o}" for i, o in enumerate(opts)) + "\nAnswer with the option's letter."
    p, r = encode_example(tok, {"prompt": prompt_dict(Prompt(user=user)), "target": gold}, ids.eos)
    return (p, r, frames)
t0 = time.time(); train = [example() for _ in range(3000)]; val = [example() for _ in range(128)]
print("data", time.time() - t0, train[0][2].shape, flush=True)
r = preset("test"); r.model = ModelRecipe(hidden=64, layers=2, intermediate=128, vision_embed=48, vision_depth=2, vision_heads=2)
m = new_teacher(r, tok, 0); batch_vision_attention(m)
step = teacher_step(m, ids.video_pad)
opt = torch.optim.AdamW(m.parameters(), lr=2e-3)
def acc():
    m.eval(); hits = 0
    with torch.no_grad():
        for i in range(0, len(val), 32):
            b = collate_items(val[i:i+32], ids.pad, ids.vision_start)
            logits, labels, _ = teacher_forward(m, b, ids.video_pad)
            first = (labels != -100).float().argmax(1); rows = torch.arange(labels.shape[0])
            hits += int((logits[rows, first - 1].argmax(-1) == labels[rows, first]).sum())
    m.train(); return hits / len(val)
for it in range(int(sys.argv[1])):
    idx = rng.choice(len(train), 16, replace=False)
    b = collate_items([train[i] for i in idx], ids.pad, ids.vision_start)
    loss, parts = step(b); loss.backward(); opt.step(); opt.zero_grad()
    if it % 50 == 0: print(it, round(float(loss), 3), "val acc", acc(), round(time.time() - t0), flush=True)
print("final val acc", acc())
