"""A webhook receiver on 127.0.0.1 for the alert tests (sensor and deployment)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN = "T000-B000-s3cr3tT0ken"


class Receiver:
    """A webhook: records every POST, answers the planned statuses in turn, then 200."""

    def __init__(self) -> None:
        self.answers: list[int] = []
        self.requests: list[tuple[int, str, dict[str, Any]]] = []  # (status answered, path, body)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status = receiver.answers.pop(0) if receiver.answers else 200
                receiver.requests.append((status, self.path, body))
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else f"no route to {self.path}".encode())

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/{TOKEN}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def delivered(self) -> list[dict[str, Any]]:
        return [body for status, path, body in self.requests if status == 200 and path == f"/hooks/{TOKEN}"]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
