"""The draining uvicorn server: what one worker does on SIGTERM (``_run`` and ``_workers``)."""

from __future__ import annotations

import signal
import time
from typing import Any

# This worker process's ModelServer, once its app is built (uvicorn builds it after the
# worker's server object, which therefore finds it here).
WORKER: dict[str, Any] = {}


def _draining_server_class() -> Any:
    import uvicorn

    class _DrainingServer(uvicorn.Server):
        """On SIGTERM: stop listening, say 503 on /ping and ``Connection: close`` on every
        answer, keep answering open connections for up to ``drain_s`` (less once none is
        left), then shut down as uvicorn does (in-flight requests finish)."""

        def __init__(self, config: Any, model_server: Any, drain_s: float) -> None:
            super().__init__(config)
            self._model_server = model_server  # None in a --workers process: see WORKER
            self.drain_s = drain_s
            self.draining_since: float | None = None

        @property
        def model_server(self) -> Any:
            return self._model_server or WORKER.get("model_server")

        def handle_exit(self, sig: int, frame: Any) -> None:
            if sig != signal.SIGTERM or self.draining_since is not None or not self.drain_s:
                super().handle_exit(sig, frame)  # a second signal, or SIGINT: as before
                return
            self._captured_signals.append(sig)
            self.draining_since = time.monotonic()
            if self.model_server is not None:
                self.model_server.draining = True
            for listening in self.servers:
                listening.close()  # new connections go to another replica

        async def on_tick(self, counter: int) -> bool:
            since = self.draining_since
            if since is not None and not self.should_exit:
                idle = not self.server_state.connections
                if idle or time.monotonic() - since >= self.drain_s:
                    self.should_exit = True
            return bool(await super().on_tick(counter))

    return _DrainingServer


def _draining_server(config: Any, model_server: Any, drain_s: float) -> Any:
    return _draining_server_class()(config, model_server, drain_s)
