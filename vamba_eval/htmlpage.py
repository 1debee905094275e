"""Shared plumbing for the static pages other than the run report (leaderboard, regress).

Same rules as ``vamba_eval.report``: templates from ``reports/`` (installed as
``vamba_eval.report_templates``), Jinja2 autoescape on, every rendered value scrubbed of key-like
strings, the run report's CSS inlined, one inline script allowed by its hash in a CSP that blocks
every network load, and a final no-secrets check before the page is written.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any, Optional
from urllib.parse import quote

import jinja2
from markupsafe import Markup

from vamba_eval.report import CSS, scrub_text, template_root, write_html

MACROS = "page_macros.html.j2"


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return (Markup if isinstance(value, Markup) else str)(scrub_text(str(value)))
    return value


def render_page(template: str, script_macro: Optional[str] = None, **context: Any) -> str:
    """Render ``reports/<template>`` with the shared CSS and (optionally) one script from the macros file."""
    root = template_root(template)

    def load(name: str) -> Optional[str]:
        entry = root.joinpath(name)
        return entry.read_text(encoding="utf-8") if entry.is_file() else None

    env = jinja2.Environment(loader=jinja2.FunctionLoader(load), autoescape=True, finalize=_scrub,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = fmt_num
    css = Markup(load(CSS) or "")  # our own file, not user data
    script = Markup("")
    if script_macro:
        script = Markup(str(getattr(env.get_template(MACROS).module, script_macro)()).strip())
    digest = base64.b64encode(hashlib.sha256(str(script).encode("utf-8")).digest()).decode("ascii")
    return env.get_template(template).render(css=css, script=script, script_hash=f"sha256-{digest}", **context)


def write_page(path: Path, html: str) -> Path:
    """Refuse pages holding a key-like string; write atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_html(path, html)
    return path


def fmt_num(value: Optional[float], digits: int = 1, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def relative_href(target: Path, page: Path) -> str:
    """A link from ``page`` to ``target`` that works offline: relative when possible, else file URI."""
    target, page = Path(target).resolve(), Path(page).resolve()
    try:
        rel = os.path.relpath(target, page.parent)
    except ValueError:  # other drive (Windows)
        return target.as_uri()
    rel = quote(rel.replace(os.sep, "/"))  # "#", "?" and spaces in folder names stay part of the path
    return rel if rel.startswith(".") else f"./{rel}"  # never a bare "name:" that reads as a URL scheme
