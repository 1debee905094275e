"""Text-only probe of the composition the teacher fails: compute an answer, then name its option's letter.

python scripts/diagnostics/compose_probe.py --steps N [--aux W --head lm|embed --layer K --hidden H --layers L
    --head-dim D --tied --postq --lr LR --batch B --device cuda --seconds S]
  --aux: weight of the answer-content loss (0 = off; train/forward.answer_aux_loss); --head: read it out with
  the lm_head or the input embedding matrix; --postq: find drills ask AFTER the options (no option can see
  the asked text, so only the reply position can match it); --tied: tied input/output embeddings.

The "video" is a line of facts ("Facts: rose is BOX, oak is HAT, …"); the question asks one key. Mix as
the teacher's: lettered 40 % (→ the letter), open 30 % (no options → the value), find drills 15 %, listing
drills 15 %. A plain Qwen2 LM (the teacher's text tower). Held-out: fresh random examples.
Needs the tokenizer of `python -m vamba_eval.train data --out build/train` (or --tokenizer DIR).
"""
import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Qwen2Config, Qwen2ForCausalLM

from vamba_eval.models.tokenizer import load_tokenizer

ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=3000)
ap.add_argument("--seconds", type=float, default=0, help="stop after this long (0: no limit)")
ap.add_argument("--aux", type=float, default=0.0)
ap.add_argument("--head", choices=("lm", "embed"), default="lm")
ap.add_argument("--layer", type=int, default=2)
ap.add_argument("--hidden", type=int, default=128)
ap.add_argument("--layers", type=int, default=4)
ap.add_argument("--head-dim", type=int, default=16)
ap.add_argument("--tied", action="store_true")
ap.add_argument("--postq", action="store_true")
ap.add_argument("--lr", type=float, default=2e-3)
ap.add_argument("--verify", type=float, default=0.0, help="weight of the option-verification loss (0 = off)")
ap.add_argument("--vlayer", type=int, default=2, help="layer whose state at each option's last token is probed")
ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--device", default="cpu")
ap.add_argument("--tokenizer", type=Path, default=Path("build/train/data/tokenizer"))
ap.add_argument("--name", default="")
a = ap.parse_args()
steps, aux_w, head, layer, postq = a.steps, a.aux, a.head, a.layer, a.postq
dev = torch.device(a.device)
torch.manual_seed(0)
torch.set_num_threads(1)
tok = load_tokenizer(a.tokenizer)
vocab = tok.get_vocab()
words = sorted(t[1:] for t in vocab if t.startswith("Ġ") and t[1:].isalpha() and len(t) >= 4)
rng0 = np.random.default_rng(0)
rng0.shuffle(words)
keys, values = words[:24], words[24:]
print(f"[{a.name}] {len(keys)} keys, {len(values)} values; {vars(a)}", flush=True)
IM_S, IM_E = "<|im_start|>", "<|im_end|>"


def chat(user: str) -> str:
    return f"{IM_S}user\n{user}{IM_E}\n{IM_S}assistant\n"


def example(rng: np.random.Generator, kind: str) -> tuple[str, str, str]:
    """(prompt, reply, answer content)"""
    n = 4
    ks = [keys[int(i)] for i in rng.choice(len(keys), n, replace=False)]
    vs = [values[int(i)] for i in rng.choice(len(values), n, replace=False)]
    facts = "Facts: " + ", ".join(f"{k} is {v}" for k, v in zip(ks, vs)) + "."
    ask = int(rng.integers(n))
    order = [int(i) for i in rng.permutation(n)]
    opts = "\n".join(f"({'ABCD'[j]}) {vs[i]}" for j, i in enumerate(order))
    gold = "ABCD"[order.index(ask)]
    if kind == "open":
        return chat(f"{facts}\nQuestion: What is {ks[ask]}?\nAnswer in a few words."), f" {vs[ask]}", vs[ask]
    if kind == "qa":
        return chat(f"{facts}\nQuestion: What is {ks[ask]}?\nOptions:\n{opts}\nAnswer with the option's letter."), gold, vs[ask]
    if kind == "find":
        pick = int(rng.integers(n))
        q = f"Question: Which option is exactly {vs[pick]}?"
        body = f"Options:\n{opts}\n{q}" if postq else f"{q}\nOptions:\n{opts}"
        return chat(f"{facts}\n{body}\nAnswer with the option's letter."), "ABCD"[order.index(pick)], vs[pick]
    listing = [int(i) for i in rng.permutation(n)]
    reply = "Options:" + ",".join(f" {vs[order[j]]} ({'ABCD'[j]})" for j in listing)
    return chat(f"{facts}\nQuestion: List every option, each followed by its letter.\nOptions:\n{opts}"), reply, ""


EOS = tok.convert_tokens_to_ids(IM_E)
PAD = tok.convert_tokens_to_ids("<|endoftext|>")


OPTION_LINE = __import__("re").compile(r"^\(([A-D])\) (.*)$", __import__("re").M)


def option_marks(prompt: str, answer: str) -> list[tuple[int, int]]:
    """[(token index of each option line's last token, 1 if its text is the answer else 0)]"""
    if not answer:
        return []
    enc = tok(prompt, add_special_tokens=False, return_offsets_mapping=True)
    ends = [e for _, e in enc["offset_mapping"]]
    out = []
    for m in OPTION_LINE.finditer(prompt):
        last = max(i for i, e in enumerate(ends) if e <= m.end())
        out.append((last, int(m.group(2) == answer)))
    return out


def batch(items: list[tuple[str, str, str]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    global MARKS
    MARKS = [option_marks(p, a) for p, _, a in items]
    enc = [(tok(p, add_special_tokens=False)["input_ids"], tok(r, add_special_tokens=False)["input_ids"] + [EOS],
            tok(" " + a, add_special_tokens=False)["input_ids"][0] if a else -100) for p, r, a in items]
    length = max(len(p) + len(r) for p, r, _ in enc)
    ids = torch.full((len(enc), length), PAD)
    labels = torch.full_like(ids, -100)
    for i, (p, r, _) in enumerate(enc):
        ids[i, :len(p) + len(r)] = torch.tensor(p + r)
        labels[i, len(p):len(p) + len(r)] = torch.tensor(r)
    return ids.to(dev), labels.to(dev), torch.tensor([x for _, _, x in enc], device=dev)


heads = a.hidden // a.head_dim
cfg = Qwen2Config(vocab_size=len(tok), hidden_size=a.hidden, intermediate_size=3 * a.hidden,
                  num_hidden_layers=a.layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                  max_position_embeddings=1024, tie_word_embeddings=a.tied)
model = Qwen2ForCausalLM(cfg).to(dev)
vhead = torch.nn.Linear(a.hidden, 1).to(dev)  # training-only probe of "this option is the answer"
opt = torch.optim.AdamW([*model.parameters(), *vhead.parameters()], lr=a.lr, betas=(0.9, 0.98), weight_decay=0.01)
KINDS = ["qa"] * 8 + ["open"] * 6 + ["find"] * 3 + ["list"] * 3


def aux_loss(hidden_states: tuple, labels: torch.Tensor, answer: torch.Tensor) -> tuple[torch.Tensor, float]:
    rows = torch.nonzero(answer != -100).squeeze(1)
    if not len(rows):
        return torch.zeros((), device=dev), float("nan")
    pos = (labels[:, 1:] != -100).float().argmax(1)[rows]
    h = model.model.norm(hidden_states[layer][rows, pos]).float()
    w = model.lm_head.weight if head == "lm" else model.model.embed_tokens.weight
    logits = h @ w.float().T
    return F.cross_entropy(logits, answer[rows]), float((logits.argmax(-1) == answer[rows]).float().mean())


def verify_loss(hidden_states: tuple) -> tuple[torch.Tensor, float]:
    rows = [(b, i, y) for b, marks in enumerate(MARKS) for i, y in marks]
    if not rows:
        return torch.zeros((), device=dev), float("nan")
    b, i, y = (torch.tensor(c, device=dev) for c in zip(*rows))
    logit = vhead(model.model.norm(hidden_states[a.vlayer][b, i])).squeeze(-1).float()
    return F.binary_cross_entropy_with_logits(logit, y.float()), float(((logit > 0).long() == y).float().mean())


def evaluate() -> dict[str, float]:
    rng = np.random.default_rng(123)
    out = {}
    model.eval()
    with torch.no_grad():
        for kind in ("qa", "open", "find"):
            ids, labels, _ = batch([example(rng, kind) for _ in range(512)])
            logits = model(input_ids=ids).logits
            first = (labels[:, 1:] != -100).float().argmax(1)
            rows = torch.arange(len(ids), device=dev)
            out[kind] = round(float((logits[rows, first].argmax(-1) == labels[rows, first + 1]).float().mean()), 3)
    model.train()
    return out


rng = np.random.default_rng(1)
t0 = time.time()
for step in range(steps + 1):
    over = a.seconds and time.time() - t0 > a.seconds
    if step % 250 == 0 or step == steps or over:
        print(f"[{a.name}] step {step} held-out first-token acc {evaluate()} ({time.time() - t0:.0f}s)", flush=True)
    if step == steps or over:
        break
    for g in opt.param_groups:
        g["lr"] = a.lr * min(1.0, (step + 1) / 100)
    kind = KINDS[int(rng.integers(len(KINDS)))]
    ids, labels, answer = batch([example(rng, kind) for _ in range(a.batch)])
    out = model(input_ids=ids, output_hidden_states=aux_w > 0 or a.verify > 0)
    loss = F.cross_entropy(out.logits[:, :-1].reshape(-1, out.logits.shape[-1]), labels[:, 1:].reshape(-1),
                           ignore_index=-100)
    if aux_w > 0:
        aux, _ = aux_loss(out.hidden_states, labels, answer)
        loss = loss + aux_w * aux
    if a.verify > 0:
        ver, vacc = verify_loss(out.hidden_states)
        loss = loss + a.verify * ver
        if step % 250 == 0 and vacc == vacc:
            print(f"[{a.name}] step {step} verify loss {float(ver):.3f} acc {vacc:.3f}", flush=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
