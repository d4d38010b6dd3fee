"""A TCP proxy for tests: forwards a local port to a server, and cuts every connection
through it on demand, as a network would; clients and server see a dropped connection.
While `refusing`, it also closes each new connection at once, as a restarting server does."""

from __future__ import annotations

import contextlib
import socket
import threading


class DroppingProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self._upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closing = False
        self.refusing = False
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                continue
            if self.refusing:
                client.close()
                continue
            try:
                server = socket.create_connection(self._upstream, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._open.update((client, server))
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            self._cut(source, target)

    def _cut(self, *sockets: socket.socket) -> None:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the pump blocked on it
            sock.close()
            with self._lock:
                self._open.discard(sock)

    def drop_all(self) -> int:
        """Cut every open connection; returns how many sockets were open."""
        with self._lock:
            open_now = list(self._open)
        self._cut(*open_now)
        return len(open_now)

    def close(self) -> None:
        self._closing = True
        self._listener.close()
        self.drop_all()

    def __enter__(self) -> DroppingProxy:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
