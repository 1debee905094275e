"""Text-only option binding: 'Which option is red? (A) blue (B) red ...' -> 'B'. Steps to learn?"""
import sys, time, numpy as np, torch
from pathlib import Path
from vamba_eval.synth.world import COLOR_NAMES
from vamba_eval.train.batches import encode_example, token_ids, collate_items
from vamba_eval.train.formats import prompt_dict
from vamba_eval.types import Prompt
from vamba_eval.train.stages import new_teacher, load_tokenizer
from vamba_eval.train.forward import teacher_forward, lm_loss
from vamba_eval.train.recipe import preset, ModelRecipe
torch.manual_seed(0); torch.set_num_threads(1)
tok = load_tokenizer(Path("build/train/data")); ids = token_ids(tok)
rng = np.random.default_rng(0)
frames = np.zeros((2, 28, 28, 3), np.uint8)
def example():
    opts = list(rng.permutation(COLOR_NAMES)[:4]); k = int(rng.integers(4))
    user = f"Which option is {opts[k]}?\n" + "\n".join(f"({'ABCD'[i]}) {o}" for i, o in enumerate(opts)) + "\nAnswer with the option's letter."
    p, r = encode_example(tok, {"prompt": prompt_dict(Prompt(user=user)), "target": "ABCD"[k]}, ids.eos)
    return (p, r, frames)
val = [example() for _ in range(256)]
r = preset("test"); r.model = ModelRecipe(hidden=int(sys.argv[2]), layers=4, intermediate=2*int(sys.argv[2]), vision_embed=32, vision_depth=1, vision_heads=2)
m = new_teacher(r, tok, 0)
opt = torch.optim.AdamW(m.parameters(), lr=float(sys.argv[3]))
def acc():
    m.eval(); hits = 0
    with torch.no_grad():
        for i in range(0, len(val), 64):
            b = collate_items(val[i:i+64], ids.pad, ids.vision_start)
            logits, labels, _ = teacher_forward(m, b, ids.video_pad)
            first = (labels != -100).float().argmax(1); rows = torch.arange(labels.shape[0])
            hits += int((logits[rows, first - 1].argmax(-1) == labels[rows, first]).sum())
    m.train(); return hits / len(val)
t0 = time.time()
for it in range(int(sys.argv[1])):
    b = collate_items([example() for _ in range(32)], ids.pad, ids.vision_start)
    logits, labels, _ = teacher_forward(m, b, ids.video_pad)
    loss = lm_loss(logits, labels); loss.backward(); opt.step(); opt.zero_grad()
    if it % 100 == 0: print(it, round(float(loss), 3), "val acc", acc(), round(time.time() - t0), flush=True)
print("final", acc())
