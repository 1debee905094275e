"""Final checkpoints: ``qwen2vl-tiny`` (the trained teacher) and ``vamba-tiny`` (stage 2), written in the
official layouts with the tokenizer and a ``training.json`` provenance record; ``install`` copies them
into the package (``vamba_eval/checkpoints/<name>/``) where the model adapters look by default."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from vamba_eval.train import ckpt
from vamba_eval.train.loop import Logger
from vamba_eval.train.recipe import Recipe

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
NAMES = ("qwen2vl-tiny", "vamba-tiny")


def _provenance(out: Path, recipe: Recipe, stage_dirs: list[str], command: str) -> dict[str, Any]:
    hist = {}
    for name in stage_dirs:
        path = Path(out) / name / "history.json"
        if path.is_file():
            rows = json.loads(path.read_text(encoding="utf-8"))
            hist[name] = rows[-1] if rows else {}
    data_meta = Path(out) / "data-summary.json"
    return {"command": command, "recipe": recipe.to_dict(), "final_losses": hist,
            "data": json.loads(data_meta.read_text(encoding="utf-8")) if data_meta.is_file() else None,
            "note": "synthetic-world training (vamba_eval.synth); a pipeline sanity check, not a real model"}


def model_card(name: str, info: dict[str, Any]) -> str:
    """A short README for the checkpoint folder: what it is, how it was trained, its held-out numbers."""
    kind = ("The transformer baseline and distillation teacher (transformers' Qwen2VLForConditionalGeneration)"
            if name == "qwen2vl-tiny" else f"A VAMBA variant {info['recipe'].get('variant', 'D')} student "
            "(vamba_eval.models.vamba; the 7B's loader reads it)")
    rows = [f"| {stage} | {h.get('val_first_token_acc', '–')} | {h.get('val_open_first_token_acc', '–')} | "
            f"{h.get('train_first_token_acc', '–')} |" for stage, h in info.get("final_losses", {}).items() if h]
    table = ["| stage | held-out lettered (first token) | held-out open | training videos |", "|---|---|---|---|",
             *rows] if rows else ["(no stage history was recorded)"]
    return "\n".join([f"# {name}", "", f"{kind}, trained on vamba-eval's synthetic video world only: "
                      "a check that the pipeline works end to end — it has never seen real video.", "",
                      f"Exported by `{info.get('command', '?')}`; the full recipe and data are in training.json.",
                      "", *table, ""])


def run_export(out: Path, recipe: Recipe, log: Logger, command: str) -> dict[str, Path]:
    out = Path(out)
    dest = out / "checkpoints"
    from vamba_eval.models.tokenizer import load_tokenizer

    teacher = ckpt.load_qwen2vl(out / "teacher")
    q = ckpt.save_qwen2vl(teacher, dest / "qwen2vl-tiny", load_tokenizer(out / "teacher"), recipe.export_dtype)
    vamba = ckpt.load_vamba(out / "stage2")
    v = ckpt.save_vamba(vamba, dest / "vamba-tiny", load_tokenizer(out / "stage2"), recipe.export_dtype)
    info = {"qwen2vl-tiny": _provenance(out, recipe, ["teacher"], command),
            "vamba-tiny": _provenance(out, recipe, ["teacher", "stage1", "stage2"], command)}
    for name, folder in (("qwen2vl-tiny", q), ("vamba-tiny", v)):
        (folder / "training.json").write_text(json.dumps(info[name], indent=1, sort_keys=True) + "\n",
                                              encoding="utf-8")
        (folder / "README.md").write_text(model_card(name, info[name]), encoding="utf-8")
        log(f"[export] {folder}: {ckpt.folder_bytes(folder) / 2**20:.2f} MiB", name=name,
            bytes=ckpt.folder_bytes(folder))
    return {"qwen2vl-tiny": q, "vamba-tiny": v}


def install(out: Path, log: Logger) -> None:
    """Copy ``out/checkpoints/*`` into the package folder (replacing what is there)."""
    for name in NAMES:
        src = Path(out) / "checkpoints" / name
        if not (src / "config.json").is_file():
            raise FileNotFoundError(f"{src}: no exported checkpoint; run the export stage first")
        target = PACKAGE_DIR / name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(src, target)
        log(f"[install] {target}")
