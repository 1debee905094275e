"""Fresh training examples while a stage trains: a ``TrainSet`` whose train pools keep filling.

The cached data folder (``data.build_data``) is a few thousand videos; a model trained from scratch
memorises it long before it learns to read the video (held-out accuracy stays at chance). Here
worker processes keep writing new synthetic releases of every task (seeds far from the cached ones
and the demo's), annotations only, and draw each sample's frames straight from its script
(``data.task_chunk(fast=True)``: same sampler, resize and prompts as a run). The examples are
tokenised in the workers and land in bounded per-pool queues; ``sample`` draws from them (and,
with probability ``cached_share``, from the cached decoded videos). Validation stays on the cached
folder's held-out videos, so numbers compare with a run without streaming.
"""

from __future__ import annotations

import collections
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from vamba_eval.train.batches import Batch, Item, TrainSet, collate_items, encode_item, token_ids
from vamba_eval.train.recipe import DataRecipe

STREAM_SEED0 = 10_000_000  # stream releases use seeds from here (cached data: first_seed …; demo: 0)

_WORKER_TOKENIZER: dict[str, Any] = {}


def _tokenizer(folder: str) -> Any:
    if folder not in _WORKER_TOKENIZER:
        from vamba_eval.models.tokenizer import load_tokenizer

        _WORKER_TOKENIZER[folder] = load_tokenizer(Path(folder))
    return _WORKER_TOKENIZER[folder]


def stream_job(task: str, seed: int, copies: int, tokenizer_dir: str, drills: int = 0) -> list[tuple[str, str, Item]]:
    """One fresh release of ``task`` → [(kind, frame-shape key, item)], tokenised (runs in a worker)."""
    from vamba_eval.train.data import shape_key, task_chunk

    tok = _tokenizer(tokenizer_dir)
    eos = token_ids(tok).eos
    frames, examples = task_chunk(task, seed, copies, fast=True, drills=drills)
    out = []
    for ex in examples:
        prompt, reply, answer, marks = encode_item(tok, ex, eos)
        video = frames[ex["video"]]
        out.append((ex["kind"], shape_key(video), (prompt, reply, video, answer, marks)))
    return out


def job_schedule(recipe: DataRecipe, tasks: list[str]) -> list[str]:
    """Tasks in proportion to the recipe's videos per task (a cycle of ~20 jobs)."""
    weights = {t: recipe.task_videos.get(t, recipe.videos_per_task) for t in tasks}
    unit = max(1, min(weights.values()) // 2)
    cycle = [t for t in tasks for _ in range(max(1, round(weights[t] / unit)))]
    rng = np.random.default_rng(0)
    return [cycle[int(i)] for i in rng.permutation(len(cycle))]


class StreamSet(TrainSet):
    """``TrainSet`` + background producers; call ``close()`` (or use as a context manager)."""

    def __init__(self, folder: Path, tokenizer: Any, recipe: DataRecipe, seed: int, workers: int,
                 tokenizer_dir: Path, capacity: int = 6000, cached_share: float = 0.0,
                 max_len: int = 512, reuse: float = 1.0, ahead: int = 4000) -> None:
        """Producers stay at most ``ahead`` examples in front of ``consumed / reuse`` (each fresh
        example is drawn ~``reuse`` times): producing faster only costs the trainer CPU time."""
        super().__init__(folder, tokenizer, max_len=max_len)
        meta_tasks = self._cached_tasks(folder)
        self.max_len, self.capacity, self.cached_share = max_len, capacity, cached_share
        self.fresh: dict[tuple[str, str], collections.deque[Item]] = {}
        self.produced = self.consumed = 0
        self.error: Optional[BaseException] = None
        self.reuse, self.ahead = reuse, ahead
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._schedule = job_schedule(recipe, meta_tasks)
        self._copies = recipe.template_copies
        self._drills = recipe.binding_drills
        self._seed = STREAM_SEED0 + 100_000 * int(seed)
        self._tok_dir = str(tokenizer_dir)
        import multiprocessing

        # spawn: the trainer holds CUDA and threads; forked children of such a process are unsafe
        self._pool = ProcessPoolExecutor(max(1, workers), mp_context=multiprocessing.get_context("spawn"))
        self._thread = threading.Thread(target=self._produce, args=(2 * max(1, workers),), daemon=True)
        self._thread.start()

    @staticmethod
    def _cached_tasks(folder: Path) -> list[str]:
        import json

        return list(json.loads((Path(folder) / "videos.json").read_text(encoding="utf-8")).get("tasks") or [])

    def _produce(self, in_flight: int) -> None:
        pending: collections.deque[Future] = collections.deque()
        k = 0
        while not self._stop.is_set():
            while self.produced > self.ahead + self.consumed / self.reuse and not self._stop.is_set():
                time.sleep(0.05)
            while len(pending) < in_flight and not self._stop.is_set():
                task = self._schedule[k % len(self._schedule)]
                try:
                    pending.append(self._pool.submit(stream_job, task, self._seed + k, self._copies, self._tok_dir,
                                                     self._drills))
                except RuntimeError:  # close() shut the pool down between the check and the submit
                    return
                k += 1
            if not pending:
                return
            try:
                items = pending.popleft().result()
            except Exception as exc:  # noqa: BLE001 — the pool is shutting down, or one release failed
                if not self._stop.is_set():
                    self.error = exc  # raised by the next sample(): never train on quietly stale data
                return
            self._add(items)

    def _add(self, items: list[tuple[str, str, Item]]) -> None:
        with self._lock:
            for kind, key, item in items:
                if len(item[0]) + len(item[1]) > self.max_len:
                    continue
                self.fresh.setdefault((kind, key), collections.deque(maxlen=self.capacity)).append(item)
                self.produced += 1

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> "StreamSet":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def count(self, kind: str, split: str = "train") -> int:
        fresh = sum(len(q) for (k, _), q in self.fresh.items() if k == kind) if split == "train" else 0
        return super().count(kind, split) + fresh

    def sample(self, kind: str, size: int, rng: np.random.Generator, blank: Optional[tuple] = None) -> Batch:
        """Fresh examples of ``kind`` (one frame shape) when enough have arrived, else cached ones."""
        if self.error is not None:
            raise RuntimeError(f"the fresh-data producer failed ({type(self.error).__name__}: {self.error}); "
                               "fix the synthetic release it was writing, or train without streaming "
                               "(--set data.stream_workers=0)") from self.error
        with self._lock:
            keys = [key for key, q in self.fresh.items() if key[0] == kind and len(q) >= size]
            if not keys or rng.random() < self.cached_share:
                return super().sample(kind, size, rng, blank)
            sizes = np.array([len(self.fresh[k]) for k in keys], dtype=float)
            queue = self.fresh[keys[int(rng.choice(len(keys), p=sizes / sizes.sum()))]]
            items = [queue[int(i)] for i in rng.choice(len(queue), size=size, replace=False)]
            self.consumed += size
        return collate_items(items, self.ids.pad, self.ids.vision_start, blank)


def training_set(data_dir: Path, tokenizer: Any, tokenizer_dir: Path, recipe: Any, device: torch.device,
                 workers: Optional[int] = None) -> TrainSet:
    """A ``StreamSet`` when the recipe streams (``data.stream_workers`` > 0), else the cached ``TrainSet``."""
    n = recipe.data.stream_workers if workers is None else workers
    if n <= 0:
        return TrainSet(data_dir, tokenizer).to(device)
    return StreamSet(data_dir, tokenizer, recipe.data, recipe.seed, n, tokenizer_dir,
                     capacity=recipe.data.stream_capacity, cached_share=recipe.data.stream_cached_share,
                     reuse=recipe.data.stream_reuse).to(device)
