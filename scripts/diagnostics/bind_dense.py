"""bind probe: VL model vs text-only Qwen2 vs tiny GPT. argv: kind steps hidden layers lr batch"""
import sys, time, numpy as np, torch, torch.nn.functional as F
from pathlib import Path
from vamba_eval.synth.world import COLOR_NAMES
from vamba_eval.train.batches import encode_example, token_ids, collate_items
from vamba_eval.train.formats import prompt_dict
from vamba_eval.types import Prompt
from vamba_eval.train.stages import new_teacher, load_tokenizer
from vamba_eval.train.forward import teacher_forward, lm_loss
from vamba_eval.train.recipe import preset, ModelRecipe, qwen2vl_config
kind, steps, hidden, layers, lr, bs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
torch.manual_seed(0); torch.set_num_threads(1)
tok = load_tokenizer(Path("build/train/data")); ids = token_ids(tok)
rng = np.random.default_rng(0)
frames = np.zeros((2, 28, 28, 3), np.uint8)
def example():
    opts = list(rng.permutation(COLOR_NAMES)[:4]); k = int(rng.integers(4))
    user = f"Which option is {opts[k]}?\n" + "\n".join(f"({'ABCD'[i]}) {o}" for i, o in enumerate(opts)) + "\nAnswer with the option's letter."
    p, r = encode_example(tok, {"prompt": prompt_dict(Prompt(user=user)), "target": "ABCD"[k]}, ids.eos)
    return (p, r, frames)
def dense():
    opts = list(rng.permutation(COLOR_NAMES)[:4]); order = rng.permutation(4)
    user = "Which letter has each colour?\n" + "\n".join(f"({'ABCD'[i]}) {o}" for i, o in enumerate(opts))
    tgt = ", ".join(f"{opts[i]} {'ABCD'[i]}" for i in order)
    p, r = encode_example(tok, {"prompt": prompt_dict(Prompt(user=user)), "target": tgt}, ids.eos)
    return (p, r, frames)
MIX = float(sys.argv[7]) if len(sys.argv) > 7 else 0.0
def train_example():
    return dense() if rng.random() < MIX else example()
val = [example() for _ in range(256)]
r = preset("test"); r.model = ModelRecipe(hidden=hidden, layers=layers, intermediate=2*hidden, vision_embed=32, vision_depth=1, vision_heads=2)
if kind == "vl":
    m = new_teacher(r, tok, 0)
    fwd = lambda b: teacher_forward(m, b, ids.video_pad)[:2]
else:
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from vamba_eval.models.tokenizer import special_token_ids
    c = qwen2vl_config(r.model, len(tok), special_token_ids(tok)); c.pop("vision_config"); c.pop("rope_scaling", None)
    if kind == "qwen2_nowd": pass
    m = Qwen2ForCausalLM(Qwen2Config(**c)); m.config._attn_implementation = "sdpa"
    def fwd(b):
        return m(input_ids=b.ids, attention_mask=b.mask).logits, b.labels
opt = torch.optim.AdamW(m.parameters(), lr=lr)
def acc():
    m.eval(); hits = 0
    with torch.no_grad():
        for i in range(0, len(val), 64):
            b = collate_items(val[i:i+64], ids.pad, ids.vision_start)
            logits, labels = fwd(b)
            first = (labels != -100).float().argmax(1); rows = torch.arange(labels.shape[0])
            hits += int((logits[rows, first - 1].argmax(-1) == labels[rows, first]).sum())
    m.train(); return hits / len(val)
t0 = time.time()
for it in range(steps):
    b = collate_items([train_example() for _ in range(bs)], ids.pad, ids.vision_start)
    logits, labels = fwd(b)
    loss = lm_loss(logits, labels); loss.backward(); opt.step(); opt.zero_grad()
    if it % 100 == 0: print(kind, it, round(float(loss.detach()), 3), "val acc", acc(), round(time.time() - t0), flush=True)
print(kind, "final", acc())
