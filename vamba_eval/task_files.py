"""Reading release annotation files safely: JSON, JSONL and parquet with a size limit, strict
UTF-8 and errors that name the file and the line (or record) — see ``task_api`` for the policy on
which problems fail a whole load. Used through ``vamba_eval.taskutil``.

A hostile file cannot exhaust memory: a file over ``max_annotation_bytes()`` is refused before it is
read (a parquet file by its footer's data size), and a JSONL line is read in 1 MB pieces and refused
as soon as it passes the limit.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from vamba_eval.task_api import DataError

ANNOTATION_LIMIT_ENV = "VAMBA_EVAL_MAX_ANNOTATION_MB"
_PIECE = 1 << 20
DEFAULT_ANNOTATION_MB = 64  # every real release file is far smaller (LVBench's jsonl: ~1 MB)


def max_annotation_bytes() -> int:
    """Size limit of one annotation file (and of one JSONL line): ``$VAMBA_EVAL_MAX_ANNOTATION_MB``
    or 64 MB. Bigger input is refused before it is read, so a hostile file cannot exhaust memory."""
    raw = os.environ.get(ANNOTATION_LIMIT_ENV, "")
    try:
        mb = float(raw) if raw.strip() else DEFAULT_ANNOTATION_MB
    except ValueError:
        raise DataError(f"${ANNOTATION_LIMIT_ENV}={raw!r} is not a number of megabytes. Fix or unset it.") from None
    return max(1, int(mb * 1024 * 1024))


def _too_big(path: Path, what: str, size: int, limit: int, unread: bool = True) -> DataError:
    return DataError(
        f"{path}: {what} is {size / 2**20:.1f} MB, over the {limit / 2**20:.0f} MB limit for annotation data "
        f"({'refused unread' if unread else 'refused'}). Check that this is the release's annotation file; "
        f"if it really is, raise ${ANNOTATION_LIMIT_ENV}."
    )


def _decode_utf8(raw: bytes, path: Path, where: str = "") -> str:
    """UTF-8 text (a leading BOM dropped) or a DataError naming the line (``where``, else counted
    in ``raw``) and the column (in bytes) of the first bad byte."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DataError(
            f"{path}: {where or f'line {line}'}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {col}). "
            "The file is damaged or in another encoding; re-download it or convert it to UTF-8."
        ) from None


def read_json_file(path: Path) -> Any:
    """A whole-file JSON annotation: size-checked before reading, strict UTF-8, errors with line/column."""
    limit = max_annotation_bytes()
    try:
        size = path.stat().st_size
        if size > limit:
            raise _too_big(path, "the file", size, limit)
        with open(path, "rb") as handle:
            raw = handle.read(limit + 1)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found. Check the release folder.") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror}). Check the file and its permissions.") from exc
    try:
        return json.loads(_decode_utf8(raw, path))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON ({exc.msg}, line {exc.lineno} column {exc.colno}). "
                        "Re-download the file.") from exc
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply to be an annotation file. Re-download the file.") from None


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, object) for every non-blank line. A line over the size limit, not
    UTF-8, not JSON or not an object → DataError naming the line (read line by line: memory stays
    bounded by the limit whatever the file holds)."""
    limit = max_annotation_bytes()
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror}). Check the file and its permissions.") from exc
    with handle:
        for line_no in itertools.count(1):
            raw = _read_line(handle, limit)
            if raw is None:
                raise _too_big(path, f"line {line_no}", _rest_of_line(handle, limit + 1), limit, unread=False)
            if not raw:
                return
            if not raw.strip():
                continue
            yield line_no, _json_object(_decode_utf8(bytes(raw), path, f"line {line_no}"), path, line_no)


def _read_line(handle: Any, limit: int) -> Optional[bytearray]:
    """The next line (b"" at the end of the file), or None once it passes ``limit`` bytes — read in
    1 MB pieces into one buffer, so at most about ``limit`` bytes are ever held."""
    buf = bytearray()
    while len(buf) <= limit:
        piece = handle.readline(min(_PIECE, limit + 1 - len(buf)))
        buf += piece
        if not piece or piece.endswith(b"\n"):
            return buf
    return None


def _rest_of_line(handle: Any, seen: int) -> int:
    """Length of an over-long line (read on in 1 MB pieces, nothing kept)."""
    while True:
        piece = handle.readline(_PIECE)
        seen += len(piece)
        if not piece or piece.endswith(b"\n"):
            return seen


def _json_object(text: str, path: Path, line_no: int) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: line {line_no}: invalid JSON ({exc.msg}, column {exc.colno}). Re-download the file.") from exc
    except RecursionError:
        raise DataError(f"{path}: line {line_no}: JSON nested too deeply. Re-download the file.") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: line {line_no}: expected a JSON object, got {type(obj).__name__}. Re-download the file.")
    return obj


def read_parquet(path: Path, required: Sequence[str]):
    """Read a parquet file with pandas and check its columns (missing column → DataError). The
    footer's (uncompressed) data size is checked against the annotation limit first."""
    import pandas as pd

    _check_parquet_size(path)
    try:
        frame = pd.read_parquet(path)
    except ImportError as exc:
        raise DataError(f"{path}: reading parquet needs pyarrow. Run `pip install pyarrow`.") from exc
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise DataError(f"{path}: not a readable parquet file ({exc}). Re-download it.") from exc
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(repr(c) for c in missing)} "
            f"(has {', '.join(map(str, frame.columns))}). Use the release revision this adapter supports, "
            "or re-download the file."
        )
    return frame


def _check_parquet_size(path: Path) -> None:
    limit = max_annotation_bytes()
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror}). Check the release folder.") from exc
    if size > limit:
        raise _too_big(path, "the file", size, limit)
    try:
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(path).metadata
        data = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    except Exception:  # noqa: BLE001 - no pyarrow or a damaged footer: pandas reports it below
        return
    if data > limit:
        raise _too_big(path, "its uncompressed data", data, limit)
