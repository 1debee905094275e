"""A small OpenAI-compatible HTTP server on 127.0.0.1 for judge tests (the real openai client talks to it)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional


class Server:
    """Scripted replies (or ``responder``); records bodies; ``delay_s`` holds each request open
    and ``max_in_flight`` is the most requests it ever held at once."""

    def __init__(self) -> None:
        self.script: list[Any] = []
        self.requests: list[dict[str, Any]] = []
        self.times: list[float] = []
        self.responder: Optional[Callable[[dict[str, Any]], tuple]] = None  # → (status, dict | bytes[, headers])
        self.delay_s = 0.0
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                with outer.lock:
                    outer.requests.append({"raw": raw.decode("utf-8"), "body": json.loads(raw), "path": self.path,
                                           "auth": self.headers.get("Authorization")})
                    outer.times.append(time.monotonic())
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                    item = outer.responder or (outer.script.pop(0) if outer.script else (500, {"error": {"message": "empty"}}))
                time.sleep(outer.delay_s)
                with outer.lock:
                    outer.in_flight -= 1
                status, payload, *rest = item(json.loads(raw)) if callable(item) else item
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    for name, value in (rest[0] if rest else {}).items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (timeout test)
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
