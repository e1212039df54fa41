"""A TCP forwarder in front of a real server that can be cut, to make storage go away mid-upload."""

import socket
import threading


class FaultProxy:
    def __init__(self, target_port: int, *, cut_after_bytes: int | None = None):
        self.target_port = target_port
        self.cut_after_bytes = cut_after_bytes
        self.upstream_bytes = 0
        self.port = 0
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.start()

    def start(self) -> None:
        self.cut_done = False
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.port = self.listener.getsockname()[1]
        self.listener.listen(32)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while data := src.recv(65536):
                if upstream:
                    self.upstream_bytes += len(data)
                    if self.cut_after_bytes is not None and self.upstream_bytes > self.cut_after_bytes:
                        self.cut()
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        """Stop listening and drop every open connection: the store is unreachable from now on."""
        self.cut_done = True
        self.listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def heal(self) -> None:
        self.cut_after_bytes = None
        self.start()


class TamperingHTTPProxy:
    """An HTTP forwarder in front of the S3 server that serves other bytes for one object on chosen reads.

    ``reads`` counts the GETs of the object whose key ends with ``key``; the GETs numbered in
    ``tamper_reads`` (1-based) are answered with ``replacement`` instead of what the store holds,
    as a store (or anything between it and us) that changes its answer would. Everything else
    passes through unchanged.
    """

    HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection"}

    def __init__(self, target_port: int, *, key: str, replacement: bytes, tamper_reads: set[int]):
        import http.client
        import http.server

        self.key, self.replacement, self.tamper_reads = key, replacement, tamper_reads
        self.reads = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                        data += self.rfile.read(size)
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _forward(self) -> None:
                body = self._body()
                headers = {k: v for k, v in self.headers.items() if k.lower() not in proxy.HOP_HEADERS}
                upstream = http.client.HTTPConnection("127.0.0.1", target_port, timeout=30)
                try:
                    upstream.request(self.command, self.path, body=body or None, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    out_headers = [
                        (k, v) for k, v in response.getheaders() if k.lower() not in proxy.HOP_HEADERS
                    ]
                    status = response.status
                finally:
                    upstream.close()
                if self.command == "GET" and self.path.split("?")[0].endswith(proxy.key) and status == 200:
                    proxy.reads += 1
                    if proxy.reads in proxy.tamper_reads:
                        data = proxy.replacement
                        unverifiable = ("x-amz-checksum", "etag")  # so the client has nothing to compare
                        out_headers = [h for h in out_headers if not h[0].lower().startswith(unverifiable)]
                self.send_response(status)
                for k, v in out_headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
