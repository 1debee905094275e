"""A strict audit of a rendered HTML page with the stdlib's HTML parser (tests/test_untrusted_text.py):
what would execute or load, and the text a reader sees."""

from __future__ import annotations

import base64
import hashlib
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

URL_ATTRS = ("href", "src", "action", "formaction", "xlink:href", "poster", "background", "cite", "srcset",
             "data", "codebase", "ping", "manifest")
FORBIDDEN_TAGS = {"iframe", "frame", "frameset", "object", "embed", "applet", "base", "link", "form", "input",
                  "button", "textarea", "math", "portal", "noscript", "template", "audio", "video", "source"}
META_OK = ({"charset"}, {"name", "content"}, {"http-equiv", "content"})


class PageAudit(HTMLParser):
    """Collects what a page would execute or load, and its visible text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self.scripts: list[tuple[dict[str, Any], str]] = []
        self.csp: list[str] = []
        self.text: list[str] = []
        self._script: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"<{tag}> has an event handler {name}={value!r}")
            if name == "style" and value and re.search(r"url\(|expression\(|@import", value, re.I):
                self.problems.append(f"<{tag}> style loads something: {value!r}")
            if name in URL_ATTRS or name == "srcdoc":
                self._url(tag, name, value or "")
        if tag in FORBIDDEN_TAGS:
            self.problems.append(f"forbidden element <{tag} {a}>")
        if tag == "meta":
            if set(a) not in META_OK or (a.get("http-equiv") or "").lower() not in ("", "content-security-policy"):
                self.problems.append(f"unexpected <meta {a}>")
            if (a.get("http-equiv") or "").lower() == "content-security-policy":
                self.csp.append(a.get("content") or "")
            if a.get("name") and a["name"] not in ("generator", "viewport", "referrer"):
                self.problems.append(f"unexpected <meta name={a['name']!r}>")
        if tag == "img" and not (a.get("class") == "thumb" and (a.get("src") or "").startswith("data:image/jpeg;base64,")):
            self.problems.append(f"unexpected <img {a}>")
        if tag == "script":
            self._script = []
            self.scripts.append((a, ""))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag == "script":
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._script is not None:
            self.scripts[-1] = (self.scripts[-1][0], "".join(self._script))
            self._script = None

    def handle_data(self, data: str) -> None:
        (self._script if self._script is not None else self.text).append(data)

    def handle_comment(self, data: str) -> None:
        self.problems.append(f"an HTML comment made it into the page: <!--{data}-->")

    def _url(self, tag: str, name: str, value: str) -> None:
        v = re.sub(r"[\x00-\x20\x7f]+", "", value).lower()
        if tag == "img" and name == "src" and v.startswith("data:image/jpeg;base64,"):
            return
        if name == "srcdoc" or re.match(r"^(javascript|vbscript|data|file|https?|ftp):", v) or v.startswith("//"):
            self.problems.append(f"<{tag} {name}={value!r}>: a script or remote/foreign URL")
        elif ":" in v.split("/", 1)[0].split("#", 1)[0].split("?", 1)[0]:
            self.problems.append(f"<{tag} {name}={value!r}>: reads as a URL scheme")


def audit(path: Path, must_show: tuple[str, ...] = ()) -> str:
    """Fail on anything executable or remote in ``path``; returns the page's visible text."""
    html = path.read_text(encoding="utf-8")
    page = PageAudit()
    page.feed(html)
    page.close()
    assert not page.problems, f"{path.name}: " + "\n".join(page.problems[:20])
    assert len(page.scripts) <= 1, f"{path.name}: {len(page.scripts)} script elements (only ours is allowed)"
    assert len(page.csp) == 1 and "default-src 'none'" in page.csp[0], path.name
    for attrs, code in page.scripts:
        assert attrs == {}, f"{path.name}: our script element got attributes {attrs}"
        assert "alert(" not in code and "</" not in code, f"{path.name}: data inside the script element"
        digest = "sha256-" + base64.b64encode(hashlib.sha256(code.encode("utf-8")).digest()).decode("ascii")
        assert f"script-src '{digest}'" in page.csp[0], f"{path.name}: the CSP does not pin the page's own script"
    text = "".join(page.text)
    for needle in must_show:  # shown to the reader, as text (escaped, not dropped)
        assert needle in text, f"{path.name}: {needle!r} is not shown as text"
    return text
