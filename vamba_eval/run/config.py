"""Run configuration: the same keys from ``--config run.yaml`` and from CLI flags (flags win)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from vamba_eval.errors import explain_validation
from vamba_eval.task_api import SCORING_MODES

# Keys that cannot change a sample's result; everything else goes into the config hash.
NON_RESULT_KEYS = ("output", "resume", "workers", "progress", "frame_cache", "executor", "gpus", "gpus_per_worker",
                   "cpu_workers", "cpus_per_worker", "ray_address", "max_restarts", "max_attempts", "judge_cache")


class ConfigFileError(ValueError):
    """A run.yaml (or flag) value is wrong; the message names the key."""


class RunConfig(BaseModel):
    """Everything that defines a run. Validated at the boundary (CLI, YAML, Python API)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tasks: list[str] = Field(min_length=1)
    model: str = "vamba"
    model_path: Optional[str] = None
    # a root with <task>/ folders, or task → folder; "hf" / "hf:ID@REV" reads the Hugging Face cache
    data_dir: Union[None, str, dict[str, str]] = None
    frames: Optional[int] = Field(None, ge=1)  # None: the task's paper setting (demo data: its demo setting)
    max_edge: Optional[int] = Field(None, ge=28)
    min_edge: Optional[int] = Field(None, ge=28)
    limit: Optional[int] = Field(None, ge=1)  # first N samples of each task (release order)
    output: Optional[str] = None
    resume: bool = False
    seed: int = 0
    device: str = "cpu"
    dtype: Optional[str] = None
    ssm_backend: Optional[str] = None
    chunk_frames: Optional[int] = Field(None, ge=1)
    compile: bool = False
    scoring: Literal["official", "lmms-eval"] = "official"
    subtitles: bool = False
    max_new_tokens: Optional[int] = Field(None, ge=1)
    # LLM judge (G-VEval, MLVU generation tasks). The API key is read from the environment variable
    # named here and is never written to the run directory.
    judge_base_url: Optional[str] = None
    judge_model: Optional[str] = None
    judge_api_key_env: str = "OPENAI_API_KEY"
    judge_prompts: Optional[str] = None  # folder with the benchmark authors' judge prompt files
    judge_cache: bool = True  # replay stored judge replies of identical requests (vamba_eval.judge_cache)
    gveval_mode: Literal["reference-free", "reference-only", "combined"] = "reference-free"
    gveval_accr: bool = False
    workers: int = Field(2, ge=1, le=32)  # decode threads
    frame_cache: bool = True
    progress: bool = True
    # Sharding (issue 5): auto = Ray when --gpus > 1 or a cluster address is given, else in-process.
    executor: Literal["local", "ray", "auto"] = "auto"
    gpus: Optional[int] = Field(None, ge=0)
    gpus_per_worker: float = Field(1.0, gt=0)
    cpu_workers: int = Field(1, ge=1)  # CPU-only Ray workers (a laptop)
    cpus_per_worker: float = Field(1.0, gt=0)
    ray_address: Optional[str] = None
    max_restarts: int = Field(3, ge=0)
    max_attempts: int = Field(3, ge=1)
    oom_retry_frames: int = Field(0, ge=0)  # halvings of the frame count after a CUDA OOM (recorded)

    @field_validator("tasks", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [t.strip() for t in v.split(",") if t.strip()]
        return v

    @field_validator("scoring")
    @classmethod
    def _scoring(cls, v: str) -> str:
        assert v in SCORING_MODES
        return v

    def config_hash(self) -> str:
        data = {k: v for k, v in self.model_dump(mode="json").items() if k not in NON_RESULT_KEYS}
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def data_dir_for(self, task: str) -> Optional[str]:
        """The task's release location: a folder, ``hf[:ID[@REV]]``, or None (the built-in demo)."""
        if self.data_dir is None:
            return None
        if isinstance(self.data_dir, dict):
            return self.data_dir.get(task)
        if self.data_dir.startswith("hf:") or self.data_dir == "hf":
            return self.data_dir
        root = Path(self.data_dir).expanduser()
        return str(root / task) if (root / task).is_dir() else str(root)


def parse_data_dir(values: list[str]) -> Union[None, str, dict[str, str]]:
    """``--data-dir ROOT`` or repeated ``--data-dir task=PATH``."""
    if not values:
        return None
    pairs = [v for v in values if "=" in v]
    if not pairs:
        if len(values) > 1:
            raise ConfigFileError("--data-dir: give one root folder, or task=PATH pairs")
        return values[0]
    if len(pairs) != len(values):
        raise ConfigFileError("--data-dir: do not mix a root folder with task=PATH pairs")
    return dict(v.split("=", 1) for v in pairs)


def build_config(file: Optional[Path], overrides: dict[str, Any]) -> RunConfig:
    """Merge a YAML file (if any) with explicit overrides (None = not given) and validate."""
    data: dict[str, Any] = {}
    source = "command line"
    if file is not None:
        source = str(file)
        try:
            loaded = yaml.safe_load(Path(file).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as err:
            raise ConfigFileError(f"{file}: cannot read ({err})") from None
        if not isinstance(loaded, dict):
            raise ConfigFileError(f"{file}: must be a mapping of run keys (tasks:, model:, frames: …)")
        data.update({k.replace("-", "_"): v for k, v in loaded.items()})
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigFileError(explain_validation(err, source, "run configuration",
                                                 "Run `vamba-eval run --help` for the accepted keys.")) from None
