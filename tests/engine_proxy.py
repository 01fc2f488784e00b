"""A unix-socket proxy in front of the Docker engine: it can die, or hold a request back.

Tests point bench at it with DOCKER_HOST. ``cut()`` makes the engine "die" (new
connections refused, open ones dropped); ``on_request`` sees every chunk a client sends
before it is forwarded, and may block to hold that request back (a slow engine);
``on_response`` sees every chunk the engine answers.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from pathlib import Path


class EngineProxy:
    """A unix-socket proxy to the Docker engine (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        target: str = "/var/run/docker.sock",
        on_request: Callable[[bytes], None] | None = None,
        on_response: Callable[[bytes], None] | None = None,
    ) -> None:
        self.path = path
        self.target = target
        self.on_request = on_request
        self.on_response = on_response
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(64)
        self.alive = True
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while self.alive:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.target)
            self.connections += [client, upstream]
            # a client that hangs up does not take its request back: the engine's side
            # stays open until the engine answered (as when a request already reached it)
            threading.Thread(
                target=self._pump, args=(client, upstream, self.on_request, False), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(upstream, client, self.on_response, True), daemon=True
            ).start()

    @staticmethod
    def _pump(
        source: socket.socket,
        sink: socket.socket,
        seen: Callable[[bytes], None] | None,
        close_sink: bool,
    ) -> None:
        try:
            while data := source.recv(65536):
                if seen is not None:
                    seen(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink) if close_sink else (source,):
                with contextlib.suppress(OSError):
                    end.close()

    def cut(self) -> None:
        """The engine is gone: refuse new connections and drop the open ones."""
        self.alive = False
        self.server.close()
        for connection in self.connections:
            with contextlib.suppress(OSError):
                connection.close()
        self.path.unlink(missing_ok=True)

    def close(self) -> None:
        """Stop proxying (the same as ``cut``, named for a test's cleanup)."""
        self.cut()
