"""A real webhook receiver on loopback (threads), scripted per request, that keeps what it got.

Signatures are checked here with the Standard Webhooks algorithm written out from the spec, not
with the library the platform signs with, so a bug in how we call it cannot hide.
"""

import base64
import hashlib
import hmac
import http.server
import json
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes

    @property
    def json(self) -> dict:
        return json.loads(self.body)


def spec_signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    """v1,<base64 HMAC-SHA256 over "<id>.<timestamp>.<body>">, the key being base64 after whsec_."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def spec_verify(secret: str, got: Received, *, tolerance: int = 300) -> bool:
    """The receiver's side of the spec: fresh timestamp, and one of the signatures matches."""
    msg_id, timestamp = got.headers["webhook-id"], got.headers["webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > tolerance:
        return False
    expected = spec_signature(secret, msg_id, timestamp, got.body)
    return any(hmac.compare_digest(expected, sig) for sig in got.headers["webhook-signature"].split(" "))


class Receiver:
    """Answers each POST to a path with the next reply scripted for that path (an int status, or
    ("sleep", seconds) then 200), then with `default` once the path's script is used up."""

    def __init__(self, default: int = 204) -> None:
        self.received: list[Received] = []
        self.script: dict[str, list[int | tuple[str, float]]] = {}
        self.default = default
        self._lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with owner._lock:
                    owner.received.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    queued = owner.script.get(self.path)
                    reply = queued.pop(0) if queued else owner.default
                if isinstance(reply, tuple):
                    time.sleep(reply[1])
                    reply = 200
                text = f"reply {reply} from the test receiver".encode() * 200  # longer than the cap
                try:
                    self.send_response(reply)
                    self.send_header("Content-Length", str(len(text)))
                    self.end_headers()
                    self.wfile.write(text)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hooks") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
