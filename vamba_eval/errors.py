"""Turning validation failures into messages that name the key and the fix."""

from __future__ import annotations

from pydantic import ValidationError


def explain_validation(err: ValidationError, source: str, what: str, fix: str, show_input: bool = False) -> str:
    """``source: invalid <what>`` + one line per bad key (+ the value given) + how to fix it."""
    lines = [f"{source}: invalid {what}"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(root)"
        got = f" (got {e.get('input')!r})" if show_input and "input" in e else ""
        lines.append(f"  - {key}: {e['msg']}{got}")
    lines.append(fix)
    return "\n".join(lines)
