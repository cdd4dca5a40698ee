"""``--workers N``: uvicorn's supervisor, with workers that drain on SIGTERM like one server.

The supervisor sends SIGTERM to every worker when it gets one; each worker then runs the same
drain as a single server (``_draining._DrainingServer``): it stops listening, answers 503 on
``/ping`` and ``Connection: close`` on every answer, and exits once its connections are done or
``--drain`` seconds have passed. The supervisor closes its own copy of the listening socket
first, so the kernel stops accepting connections nobody would answer.

Worker processes are spawned: :class:`DrainingProcess` is pickled to them, hence a module of
its own that imports uvicorn at the top (``_run`` is imported where no server runs).
"""

from __future__ import annotations

import contextlib
import logging
from socket import socket

from uvicorn import Config, Server
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

logger = logging.getLogger("uvicorn.error")


class DrainingProcess(Process):
    """A worker whose server drains on SIGTERM for ``drain_s`` seconds."""

    def __init__(self, config: Config, sockets: list[socket], drain_s: float) -> None:
        self.drain_s = drain_s
        super().__init__(config, sockets)

    @property
    def server(self) -> Server:
        if self._server is None:
            from ._draining import _draining_server

            # The model server is not built yet: the worker's app_from_env records it.
            self._server = _draining_server(self.config, None, self.drain_s)
        return self._server


class DrainingMultiprocess(Multiprocess):
    """uvicorn's supervisor, starting (and restarting) :class:`DrainingProcess` workers."""

    def __init__(self, config: Config, sockets: list[socket], drain_s: float) -> None:
        super().__init__(config, sockets)
        self.drain_s = drain_s

    def _new(self) -> DrainingProcess:
        return DrainingProcess(self.config, self.sockets, self.drain_s)

    def init_processes(self) -> None:
        for _ in range(self.processes_num):
            process = self._new()
            process.start()
            self.processes.append(process)

    def handle_term(self) -> None:
        # Workers keep their own copies of the socket until their drain ends; the kernel
        # refuses new connections once the last copy is closed.
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()
        super().handle_term()

    def handle_ttin(self) -> None:
        logger.info("Received SIGTTIN, increasing the number of processes.")
        self.processes_num += 1
        process = self._new()
        process.start()
        self.processes.append(process)

    def keep_subprocess_alive(self) -> None:
        # uvicorn's, with a draining replacement for a worker that died.
        if self.should_exit.is_set():
            return
        for idx, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()
            process.join()
            if process.exitcode == STARTUP_FAILURE:
                logger.error(f"Child process [{process.pid}] failed to start, stopping.")
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            logger.info(f"Child process [{process.pid}] died")
            replacement = self._new()
            replacement.start()
            self.processes[idx] = replacement
