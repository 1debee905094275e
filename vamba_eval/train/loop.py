"""The optimisation loop shared by every stage: AdamW, warm-up + cosine, grad clipping, bf16 autocast
on CUDA, batches drawn from a ``TrainSet`` as captions or QA by the stage's mix."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np
import torch

from vamba_eval.train.batches import Batch, TrainSet
from vamba_eval.train.recipe import StageRecipe

StepFn = Callable[[Batch], tuple[torch.Tensor, dict[str, float]]]


class Logger:
    """Prints and appends JSON lines to ``log.jsonl`` in the output folder."""

    def __init__(self, folder: Optional[Path]) -> None:
        self.path = Path(folder) / "log.jsonl" if folder else None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, msg: str, **record: Any) -> None:
        print(msg, flush=True)
        if self.path:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"time": round(time.time(), 3), "msg": msg, **record}) + "\n")


def lr_at(step: int, stage: StageRecipe) -> float:
    """Linear warm-up, then cosine decay to 10 % of the peak."""
    if step < stage.warmup:
        return stage.lr * (step + 1) / stage.warmup
    span = max(1, stage.steps - stage.warmup)
    return stage.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, (step - stage.warmup) / span))))


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def pick_kind(data: TrainSet, stage: StageRecipe, rng: np.random.Generator) -> str:
    """Kind of the next batch, by the stage's shares: caption / drill / open, the rest qa.

    A kind with no examples gives way to qa, then caption (the data may have no drills or captions)."""
    r = rng.random()
    if r < stage.caption_fraction:
        want = "caption"
    elif r < stage.caption_fraction + stage.drill_fraction:
        want = "drill"
    elif r < stage.caption_fraction + stage.drill_fraction + stage.open_fraction:
        want = "open"
    else:
        want = "qa"
    for kind in (want, "qa", "caption"):
        if data.count(kind):
            return kind
    return want


def fit_budget(stage: StageRecipe, step: int, elapsed: float, mark: float, log: Logger,
               name: str) -> StageRecipe:
    """At step 60: fewer total steps if ``stage.max_seconds`` would be exceeded, from the rate of steps
    20–60 (the first steps pay CUDA warm-up); the schedule follows the new length."""
    if step != 60 or stage.max_seconds <= 0:
        return stage
    rate = (elapsed - mark) / 40
    fit = max(61, 60 + int((stage.max_seconds - elapsed) / rate))
    if fit >= stage.steps:
        return stage
    log(f"[{name}] {rate:.3f}s/step: {stage.steps} steps → {fit} to fit {stage.max_seconds:.0f}s")
    return dataclasses.replace(stage, steps=fit)


def train(params: Iterable[torch.nn.Parameter], step_fn: StepFn, data: TrainSet, stage: StageRecipe,
          device: torch.device, seed: int, log: Logger, name: str) -> list[dict[str, float]]:
    """Run ``stage.steps`` optimiser steps (fewer under ``max_seconds``); returns the logged history."""
    params = [p for p in params if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=stage.lr, betas=(0.9, 0.98), weight_decay=stage.weight_decay)
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    history, window, t0, mark = [], [], time.perf_counter(), 0.0
    every = max(1, min(100, stage.steps // 10))
    step = 0
    while step < stage.steps:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, stage)
        batch = data.sample(pick_kind(data, stage, rng), stage.batch, rng).to(device)
        with autocast(device):
            loss, parts = step_fn(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        window.append({"loss": float(loss.detach()), **parts})
        if (step + 1) % every == 0 or step + 1 == stage.steps:
            mean = {k: float(np.mean([w[k] for w in window if k in w])) for k in window[-1]}
            rec = {"stage": name, "step": step + 1, "lr": lr_at(step, stage),
                   "elapsed_s": round(time.perf_counter() - t0, 1), **{k: round(v, 4) for k, v in mean.items()}}
            history.append(rec)
            log(f"[{name}] step {step + 1}/{stage.steps} " + " ".join(f"{k}={v:.4f}" for k, v in mean.items())
                + f" ({rec['elapsed_s']}s)", **rec)
            window = []
        step += 1
        if stage.max_seconds and time.perf_counter() - t0 > 1.15 * stage.max_seconds and step < stage.steps:
            log(f"[{name}] stopping at step {step}/{stage.steps}: past 1.15 × max_seconds")
            stage = dataclasses.replace(stage, steps=step)
        if step == 20:
            mark = time.perf_counter() - t0
        stage = fit_budget(stage, step, time.perf_counter() - t0, mark, log, name)
    return history


LogitsFn = Callable[[Batch], tuple[torch.Tensor, torch.Tensor]]


@torch.no_grad()
def validate(logits_fn: LogitsFn, data: TrainSet, device: torch.device, size: int = 32, kind: str = "qa",
             letters: Optional[torch.Tensor] = None, split: str = "val") -> dict[str, float]:
    """Held-out ``kind`` examples: first reply token accuracy (greedy, teacher-forced prompt) and reply LM
    loss; with ``letters`` (token ids), the accuracy over every reply position whose gold is a letter
    instead (a drill's listing names one letter per option); ``exact``: share of replies right in every token.
    ``split="train"``: as many examples of the cached training videos, keys prefixed ``train`` (a gap to the
    held-out numbers is memorisation)."""
    from vamba_eval.train.batches import IGNORE
    from vamba_eval.train.forward import lm_loss

    hits, n, losses, exact, rows = 0, 0, [], 0, 0
    for batch in data.val_batches(kind, size, split=split):
        batch = batch.to(device)
        with autocast(device):
            logits, labels = logits_fn(batch)
        losses.append(float(lm_loss(logits, labels)))
        gold = labels[:, 1:]  # [b, L-1] the token each position predicts
        if letters is None:
            first = (gold != IGNORE).float().argmax(dim=1, keepdim=True)  # first reply position per row
            sel = torch.arange(gold.shape[1], device=gold.device)[None] == first
        else:
            sel = torch.isin(gold, letters.to(gold.device))
        right = logits[:, :-1].argmax(-1) == gold
        hits += int((right & sel).sum())
        n += int(sel.sum())
        exact += int((right | (gold == IGNORE)).all(dim=1).sum())
        rows += gold.shape[0]
    name = "letter" if letters is not None else "first_token"
    prefix = split if kind == "qa" else f"{split}_{kind}"
    return {f"{prefix}_{name}_acc": round(hits / max(1, n), 4), f"{prefix}_exact": round(exact / max(1, rows), 4),
            f"{prefix}_lm": round(float(np.mean(losses)), 4) if losses else float("nan"), f"{prefix}_n": n}
