"""The HTTP side of the fakes of hosted DNS APIs (Cloudflare, deSEC, OVH, Google).

Each fake keeps its API's state and answers in ``_handle``; this serves it on
a free loopback port from a thread, for as long as the fake is used as a
context manager.
"""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

_F = TypeVar("_F", bound="HttpFake")


class HttpFake:
    """Serve ``self._handle(request, method)`` on 127.0.0.1 while entered."""

    #: the HTTP methods the API answers; the server answers others with 501
    METHODS: tuple[str, ...] = ("GET", "POST", "PUT", "PATCH", "DELETE")
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def _handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        raise NotImplementedError

    def __enter__(self: _F) -> _F:
        fake = self

        def answer(method: str) -> Any:
            return lambda request: fake._handle(request, method)

        handler = type(
            "Handler",
            (BaseHTTPRequestHandler,),
            {
                **{f"do_{method}": answer(method) for method in self.METHODS},
                "log_message": lambda request, format, *args: None,
            },
        )
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT`` of the running server."""
        assert self._server is not None, "use the fake as a context manager"
        return f"127.0.0.1:{self._server.server_address[1]}"
