"""On-disk records of a run directory, validated with pydantic at the file boundary.

    RUN_DIR/config.json    RunConfigRecord  resolved config + hash + environment
    RUN_DIR/samples.jsonl  SampleRecord     one line per finished sample, append-only
    RUN_DIR/results.json   ResultsRecord    per-task aggregates (schema_version)
    RUN_DIR/report.html    rendered from the three files above

A SampleRecord never carries both an error and a score: ``error`` set ⇒ ``correct`` is None.
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = 1


class SampleError(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    type: str  # e.g. "VideoUnreadable", "VideoNotFound", "ModelError", "DataError"
    message: str  # names the file/record and what to do


class SampleRecord(BaseModel):
    """One line of samples.jsonl."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    task: str
    sample_id: str
    video: str
    video_key: str
    categories: dict[str, list[str]] = Field(default_factory=dict)
    gold: str = ""
    options: list[str] = Field(default_factory=list)  # kept so `score` can re-run the official rule from disk
    frame_indices: list[int] = Field(default_factory=list)
    frame_times: list[float] = Field(default_factory=list)
    frame_size: Optional[list[int]] = None  # [width, height] fed to the model
    prompt_hash: str = ""
    prompt: str = ""  # the task prompt text (before the chat template), for the report
    response: Optional[str] = None
    extracted: Optional[str] = None
    extraction_rule: str = ""
    correct: Optional[bool] = None
    score: Optional[float] = None  # graded tasks (judge scores)
    judge: Optional[dict[str, Any]] = None  # raw judge outputs (never API keys)
    unparsed: bool = False
    flags: list[str] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict)
    tokens: dict[str, int] = Field(default_factory=dict)
    peak_memory_bytes: Optional[int] = None
    error: Optional[SampleError] = None
    attempt: int = 1

    @model_validator(mode="after")
    def _error_xor_score(self) -> "SampleRecord":
        if self.error is not None and (self.correct is not None or self.score is not None):
            raise ValueError(f"sample {self.task}/{self.sample_id}: a record cannot carry both an error and a score")
        return self


class Estimate(BaseModel):
    """An accuracy with its uncertainty (values in percent)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    value: Optional[float]  # None when n_scored == 0
    correct: Optional[int] = None  # accuracy tasks: k of n; None for mean scores
    n: int  # denominator (scored samples)
    stderr: Optional[float] = None  # clustered by video
    ci95: Optional[list[float]] = None
    n_clusters: int = 0


class TaskResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    task: str
    title: str = ""
    metric: str = "accuracy"
    scoring: str = "official"
    overall: Estimate
    breakdowns: dict[str, dict[str, Estimate]] = Field(default_factory=dict)
    n: int  # samples in the evaluated split (after --limit)
    n_scored: int
    n_failed: int  # sample errors (video unreadable, model error …)
    n_unparsed: int  # no answer could be extracted
    n_flagged: dict[str, int] = Field(default_factory=dict)  # e.g. random fallbacks, empty-correct
    notes: list[str] = Field(default_factory=list)


class ResultsRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    schema_version: int = SCHEMA_VERSION
    run_id: str
    config_hash: str
    synthetic: bool = False
    tasks: dict[str, TaskResult]


def dump_json_line(record: BaseModel) -> str:
    """Serialise a record as one compact, key-sorted JSON line (stable bytes across executors)."""
    import json

    return json.dumps(record.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def summary(record: ResultsRecord) -> dict[str, Any]:
    """task → overall value, for printing."""
    return {name: r.overall.value for name, r in record.tasks.items()}
