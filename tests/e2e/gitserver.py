"""Git's smart HTTP protocol on loopback: a small threaded HTTP server that hands every request to
`git http-backend` (CGI), serving the bare repositories under one directory read-only."""
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def _split_cgi_response(output: bytes) -> tuple[bytes, bytes]:
    """A CGI response's header block and body, whichever line ending the headers use."""
    ends = [(index, separator) for separator in (b"\r\n\r\n", b"\n\n")
            if (index := output.find(separator)) >= 0]
    if not ends:
        return output, b""
    index, separator = min(ends)
    return output[:index], output[index + len(separator):]


class _GitBackendHandler(BaseHTTPRequestHandler):
    project_root: Path

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        env = {
            "PATH": os.environ["PATH"],
            "GIT_PROJECT_ROOT": str(self.project_root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": self.client_address[0],
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
        }
        result = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, timeout=60)
        head, payload = _split_cgi_response(result.stdout)
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status if result.returncode == 0 else 500)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_POST = do_GET

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's signature
        pass


class GitHTTPServer:
    """Serves the bare repositories under project_root at http://127.0.0.1:PORT/NAME.git."""

    def __init__(self, project_root: Path):
        handler = type("Handler", (_GitBackendHandler,), {"project_root": project_root})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="git-http", daemon=True)

    def url(self, repository: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/{repository}"

    def __enter__(self) -> "GitHTTPServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
