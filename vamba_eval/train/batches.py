"""Tokenised examples and batches for both model families, from one cached data folder.

A batch holds examples of one kind (QA or caption) whose videos share a frame shape, so their
video tokens stack. The student (VAMBA) sequence is the chat text with NO video tokens; the
teacher (Qwen2-VL) sequence is the same ids with ``<|video_pad|>`` × N inserted right after
``<|vision_start|>``. Every supervised position lies after the video, so a student position q
is teacher position q + N: that is how the distillation loss lines the two up.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from vamba_eval.models.base import qwen_chat
from vamba_eval.train.data import load_examples, load_frames_cache
from vamba_eval.train.formats import OPTION_RE, prompt_from_dict

IGNORE = -100
PAD_TO = 32


@dataclass
class Batch:
    ids: torch.Tensor  # [b, L] student ids (right-padded)
    labels: torch.Tensor  # [b, L] target ids, IGNORE elsewhere
    mask: torch.Tensor  # [b, L] 1 = real token
    frames: torch.Tensor  # [b, T, H, W, 3] uint8
    vision_start: list[int]  # per row, index of <|vision_start|>
    answer: Optional[torch.Tensor] = None  # [b] first token of the answer's content (IGNORE: none), answer_token
    marks: Optional[torch.Tensor] = None  # [b, M, 2] (prompt position, is-the-answer) per option (-1: none)

    def to(self, device: torch.device) -> "Batch":
        return Batch(self.ids.to(device), self.labels.to(device), self.mask.to(device),
                     self.frames.to(device), self.vision_start,
                     None if self.answer is None else self.answer.to(device),
                     None if self.marks is None else self.marks.to(device))


@dataclass
class TokenIds:
    pad: int
    eos: int
    vision_start: int
    video_pad: int


def token_ids(tokenizer: Any) -> TokenIds:
    conv = tokenizer.convert_tokens_to_ids
    return TokenIds(conv("<|endoftext|>"), conv("<|im_end|>"), conv("<|vision_start|>"), conv("<|video_pad|>"))


def encode_example(tokenizer: Any, ex: dict[str, Any], eos: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(prompt ids, reply ids + eos), tokenised apart as at inference (the prompt ends where generation starts).

    Tuples of ints, not lists: the garbage collector stops tracking them, so the ~10⁵ examples a
    streaming stage keeps alive do not make every full collection (and the steps) slower."""
    prompt = tokenizer(qwen_chat(prompt_from_dict(ex["prompt"]), ""), add_special_tokens=False)["input_ids"]
    reply = tokenizer(ex["target"], add_special_tokens=False)["input_ids"]
    return tuple(prompt), (*reply, eos)


def answer_token(tokenizer: Any, ex: dict[str, Any]) -> int:
    """The token of the example's answer content (``ex["answer"]``, the gold option's text) that tells it
    from the other options (``ex["others"]``), as it reads after a space, i.e. as in the option lines
    ("(B) the white triangle" against "the red square", … → 'Ġwhite'): the first token of the answer that
    no other option contains, else its first token if no other option starts with it, else IGNORE (no
    single token names the answer: "a magenta square" among "a magenta circle" and "a black square").
    Without ``others``: the answer's first token. IGNORE when there is no answer.

    The answer-content loss (``forward.answer_aux_loss``) asks a middle layer for this token at the
    position that starts the reply, whatever the reply's format (a letter, "B) BOX" or the text). The
    answer's first token alone was shared with another option in 42 % of the questions ("it appears …" /
    "it disappears …"), where it names no option (scripts/diagnostics/README.md, session 8)."""
    text = (ex.get("answer") or "").strip()
    if not text:
        return IGNORE
    gold = _space_ids(tokenizer, text)
    others = [_space_ids(tokenizer, t) for t in ex.get("others") or () if t.strip()]
    banned = {t for o in others for t in o}
    for t in gold:
        if t not in banned:
            return int(t)
    return int(gold[0]) if all(o[0] != gold[0] for o in others) else IGNORE


def _space_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` as it reads after a space (an option line's text)."""
    return tokenizer(" " + text.strip(), add_special_tokens=False)["input_ids"]


def encode_item(tokenizer: Any, ex: dict[str, Any], eos: int) -> tuple[Any, ...]:
    """(prompt ids, reply ids + eos, ``answer_token``, ``option_marks``): what a training item carries, with
    the prompt tokenised once (its offsets place the marks)."""
    text = qwen_chat(prompt_from_dict(ex["prompt"]), "")
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    reply = tokenizer(ex["target"], add_special_tokens=False)["input_ids"]
    ends = [e for _, e in enc["offset_mapping"]]
    return tuple(enc["input_ids"]), (*reply, eos), answer_token(tokenizer, ex), _marks(ex, text, ends)


def option_marks(tokenizer: Any, ex: dict[str, Any]) -> tuple[tuple[int, int], ...]:
    """Per option line of the prompt: (index of its last prompt token, 1 if its text is the answer else 0);
    () without an answer, without option lines, or unless exactly one option carries the answer.

    The option-verification loss (``forward.option_verify_loss``) asks a middle layer, at each option's last
    token, whether that option is the answer: four supervised bits per question where the reply gives one."""
    return encode_item(tokenizer, ex, -1)[3]


def _marks(ex: dict[str, Any], text: str, ends: list[int]) -> tuple[tuple[int, int], ...]:
    """``option_marks`` from the chat ``text`` and the end offset of each of its tokens."""
    answer = (ex.get("answer") or "").strip()
    user = ex["prompt"]["user"]
    if not answer or not user:
        return ()
    start = text.index(user)
    lines, offset = [], start
    for line in user.split("\n"):
        m = OPTION_RE.match(line)
        if m is not None:
            lines.append((offset + len(line), int(m.group(2).strip() == answer)))
        offset += len(line) + 1
    if len(lines) < 2 or sum(y for _, y in lines) != 1:
        return ()
    return tuple((bisect.bisect_right(ends, end) - 1, y) for end, y in lines)


@dataclass(frozen=True)
class _Loaded:
    frames: dict[str, torch.Tensor]  # shape key → [n, T, H, W, 3] uint8 (CPU)
    videos: list[Any]
    examples: list[dict[str, Any]]
    encoded: list[tuple[tuple[int, ...], tuple[int, ...]]]
    answers: list[int]
    marks: list[Any]
    pools: dict[tuple[str, str, str], list[int]]


_LOADED: dict[tuple, _Loaded] = {}  # the last folder loaded in this process (an ablation worker trains every cell
# of its seed on one folder: decompressing the frames and tokenising ~30k examples took ~15 s per stage)


def _tokenizer_key(tokenizer: Any) -> str:
    import hashlib

    backend = getattr(tokenizer, "backend_tokenizer", None)
    return hashlib.sha256(backend.to_str().encode()).hexdigest() if backend is not None else f"id:{id(tokenizer)}"


def _load_folder(folder: Path, tokenizer: Any, eos: int, max_len: int, holdout_every: int) -> _Loaded:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    key = (str(folder.resolve()), tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files),
           _tokenizer_key(tokenizer), eos, max_len, holdout_every)
    if key in _LOADED:
        return _LOADED[key]
    groups, videos = load_frames_cache(folder)
    examples = load_examples(folder)
    items = [encode_item(tokenizer, e, eos) for e in examples]
    encoded = [(p, r) for p, r, _, _ in items]
    pools: dict[tuple[str, str, str], list[int]] = {}
    for i, (e, (p, r)) in enumerate(zip(examples, encoded)):
        if len(p) + len(r) <= max_len:
            split = "val" if holdout_every and e["video"] % holdout_every == 0 else "train"
            pools.setdefault((split, e["kind"], videos[e["video"]][0]), []).append(i)
    _LOADED.clear()
    _LOADED[key] = _Loaded({k: torch.from_numpy(v) for k, v in groups.items()}, videos, examples, encoded,
                           [a for _, _, a, _ in items], [m for _, _, _, m in items], pools)
    return _LOADED[key]


class TrainSet:
    """All examples, tokenised once; frames kept as uint8 tensors per shape group."""

    def __init__(self, folder: Path, tokenizer: Any, max_len: int = 512, holdout_every: int = 25) -> None:
        """Every ``holdout_every``-th video (and all its examples) is held out for validation."""
        self.ids = token_ids(tokenizer)
        loaded = _load_folder(Path(folder), tokenizer, self.ids.eos, max_len, holdout_every)
        self.frames = dict(loaded.frames)  # .to() replaces the values, never the cached tensors
        self.videos, self.examples, self.encoded = loaded.videos, loaded.examples, loaded.encoded
        self.answers, self.marks = loaded.answers, loaded.marks
        self.pools = {k: list(v) for k, v in loaded.pools.items()}

    def to(self, device: torch.device) -> "TrainSet":
        self.frames = {k: v.to(device) for k, v in self.frames.items()}
        return self

    def count(self, kind: str, split: str = "train") -> int:
        return sum(len(v) for (s, k, _), v in self.pools.items() if k == kind and s == split)

    def val_batches(self, kind: str, size: int, blank: Optional[tuple] = None, split: str = "val") -> list[Batch]:
        """The held-out examples of ``kind``, in fixed batches; ``split="train"``: as many examples of the
        training videos (the first of each frame-shape pool) — beside the held-out numbers, the memorisation gauge."""
        out = []
        for (s, k, shape), pool in sorted(self.pools.items()):
            if s == split and k == kind:
                if split == "train":
                    pool = pool[:max(1, len(self.pools.get(("val", k, shape), ())))]
                out += [self.collate(pool[i:i + size], blank) for i in range(0, len(pool), size)]
        return out

    def sample(self, kind: str, size: int, rng: np.random.Generator, blank: Optional[tuple] = None) -> Batch:
        """``size`` random training examples of ``kind`` from one frame-shape group (groups weighted by size);
        ``blank``: a frame shape [T, H, W, 3] of zeros replaces every video (see ``BlankVideo``)."""
        keys = [key for key in self.pools if key[0] == "train" and key[1] == kind]
        if not keys:
            raise ValueError(f"no {kind} examples in the training data")
        weights = np.array([len(self.pools[k]) for k in keys], dtype=float)
        key = keys[int(rng.choice(len(keys), p=weights / weights.sum()))]
        pool = self.pools[key]
        chosen = [pool[int(i)] for i in rng.choice(len(pool), size=min(size, len(pool)), replace=False)]
        return self.collate(chosen, blank)

    def collate(self, indices: list[int], blank: Optional[tuple] = None) -> Batch:
        items = [(*self.encoded[i], None if blank else self.frames[g][r], self.answers[i], self.marks[i])
                 for i, (g, r) in ((i, self.videos[self.examples[i]["video"]]) for i in indices)]
        return collate_items(items, self.ids.pad, self.ids.vision_start, blank)


# prompt ids, reply ids (+ eos), frames [T, H, W, 3] (array or tensor)[, answer_token (default IGNORE)
# [, option_marks (default none)]]
Item = tuple


def collate_items(items: list[Item], pad: int, vision_start: int, blank: Optional[tuple] = None) -> Batch:
    """Right-padded batch of (prompt, reply, frames[, answer token]) items whose frames share one shape
    (or, with ``blank`` = [T, H, W, 3], zero frames of that shape in place of every video)."""
    length = -(-max(len(it[0]) + len(it[1]) for it in items) // PAD_TO) * PAD_TO  # few distinct shapes
    ids = torch.full((len(items), length), pad, dtype=torch.long)
    labels = torch.full_like(ids, IGNORE)
    mask = torch.zeros_like(ids)
    for row, (p, r, *_) in enumerate(items):
        ids[row, :len(p) + len(r)] = torch.tensor(p + r)
        labels[row, len(p):len(p) + len(r)] = torch.tensor(r)
        mask[row, :len(p) + len(r)] = 1
    if blank:
        frames = torch.zeros((len(items), *blank), dtype=torch.uint8)  # [b, T, H, W, 3]
    else:
        frames = _stack([it[2] for it in items])  # [b, T, H, W, 3] uint8
    answer = torch.tensor([it[3] if len(it) > 3 else IGNORE for it in items])  # [b]
    return Batch(ids, labels, mask, frames, [it[0].index(vision_start) for it in items], answer, _stack_marks(items))


def _stack_marks(items: list[Item]) -> Optional[torch.Tensor]:
    """[b, M, 2] option marks (rows without options padded with -1); None when no item has any."""
    rows = [it[4] if len(it) > 4 else () for it in items]
    width = max(len(r) for r in rows)
    if not width:
        return None
    out = torch.full((len(rows), width, 2), -1, dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            out[i, :len(row)] = torch.tensor(row)
    return out


def _stack(frames: list[Any]) -> torch.Tensor:
    """Stack the videos: numpy arrays (fresh stream items) with numpy — one plain copy. With three trainers
    (16 torch threads each) and their stream workers on 16 cores, steps took 1.9 s with the trainers
    caught in torch.stack here (scripts/diagnostics/README.md, session 6)."""
    if isinstance(frames[0], np.ndarray):
        return torch.from_numpy(np.stack(frames))
    return torch.stack([torch.as_tensor(f) for f in frames])


def video_token_count(frames: torch.Tensor, vision_cfg: Any) -> int:
    """LLM tokens of one video [T, H, W, 3] (T even): T/temporal · (H/(patch·merge)) · (W/(patch·merge))."""
    t, h, w, _ = frames.shape
    unit = vision_cfg.patch_size * vision_cfg.spatial_merge_size
    return (t // vision_cfg.temporal_patch_size) * (h // unit) * (w // unit)


def teacher_inputs(batch: Batch, n_video: int, video_pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, attention mask, labels) [b, L + n] of the Qwen2-VL sequence: ``video_pad`` × n after <|vision_start|>.

    One gather per tensor (a per-row loop of ``torch.cat`` was hundreds of tiny GPU ops per step).
    """
    b, length = batch.ids.shape
    dev = batch.ids.device
    start = torch.tensor(batch.vision_start, device=dev)[:, None]  # [b, 1]
    j = torch.arange(length + n_video, device=dev)[None]  # [1, L + n] output positions
    in_video = (j > start) & (j <= start + n_video)  # [b, L + n]
    src = torch.where(j > start + n_video, j - n_video, j).clamp(max=length - 1)  # source column per output
    ids = batch.ids.gather(1, src).masked_fill(in_video, video_pad)
    mask = batch.mask.gather(1, src).masked_fill(in_video, 1)
    labels = batch.labels.gather(1, src).masked_fill(in_video, IGNORE)
    return ids, mask, labels


def teacher_position_ids(batch: Batch, mask: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """Qwen2-VL M-RoPE position ids [3, b, L + n] for ``teacher_inputs``' sequence, vectorised.

    ``grid``: the LLM token grid of every video (t, h, w after the 2×2 merge; n = t·h·w). Text before
    the video counts 0, 1, …; video token (ti, hi, wi) gets s + (ti, hi, wi) with s the number of
    tokens before it; text after resumes at s + max(t, h, w); padding gets 0 — what `transformers`'
    ``get_rope_index`` computes with a Python loop over the rows (``tests/test_train.py`` checks it).
    """
    t, h, w = grid
    n = t * h * w
    dev = mask.device
    s = torch.tensor(batch.vision_start, device=dev)[:, None] + 1  # [b, 1] tokens before the video
    j = torch.arange(mask.shape[1], device=dev)[None]  # [1, L + n]
    k = (j - s).clamp(min=0, max=n - 1)  # [b, L + n] video token index (clamped outside the video)
    video = torch.stack([k // (h * w), (k // w) % h, k % w])  # [3, b, L + n]
    after = s + max(t, h, w) + (j - s - n)  # [b, L + n]
    text = torch.where(j < s, j, after)  # [b, L + n]
    in_video = (j >= s) & (j < s + n)
    pos = torch.where(in_video[None], s[None] + video, text[None].expand(3, -1, -1))
    return pos.masked_fill(mask[None] == 0, 0)


def check_even(frames: torch.Tensor, temporal: int, where: Optional[str] = None) -> None:
    if frames.shape[1] % temporal:
        raise ValueError(f"{where or 'batch'}: {frames.shape[1]} frames per video; training needs a multiple of "
                         f"{temporal} (the run's odd-count rule guarantees it for decoded videos)")


class BlankVideo:
    """A text-only view of a ``TrainSet``: every batch's video is one black clip of one LLM token.

    The option-binding drills are answered from the text alone, so the binding stage trains them at
    about half a video step's cost (0.07 vs 0.15 s per step of 128 on an H100; ``stages.run_binding``)."""

    def __init__(self, data: TrainSet, vision_cfg: Any) -> None:
        unit = vision_cfg.patch_size * vision_cfg.spatial_merge_size
        self.data, self.shape = data, (vision_cfg.temporal_patch_size, unit, unit, 3)

    def count(self, kind: str, split: str = "train") -> int:
        return self.data.count(kind, split)

    def sample(self, kind: str, size: int, rng: np.random.Generator) -> Batch:
        return self.data.sample(kind, size, rng, blank=self.shape)

    def val_batches(self, kind: str, size: int, split: str = "val") -> list[Batch]:
        return self.data.val_batches(kind, size, blank=self.shape, split=split)
