"""``--workers N``: uvicorn's supervisor, with workers that drain on SIGTERM like one server.

Every worker it starts drains: the first ones, one that replaces a dead worker, SIGTTIN's, and
SIGHUP's replacements.

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
WORKER_START_S = 120.0  # how long a SIGHUP replacement may take to start serving


class DrainingProcess(Process):
    """A worker whose server drains on SIGTERM for ``drain_s`` seconds."""

    def __init__(self, config: Config, sockets: list[socket], drain_s: float) -> None:
        self.drain_s = drain_s
        super().__init__(config, sockets)

    def target(self, sockets: list[socket] | None = None) -> None:  # in the worker
        # Built before the health-check thread starts, or that thread (pinged at once by a
        # SIGHUP restart) could build a second server, one that never starts.
        _ = self.server
        super().target(sockets)

    def pong(self) -> None:
        # The supervisor's health check: any answer says alive; True says ready, which for a
        # SIGHUP replacement means serving its model, not just listening (uvicorn's meaning):
        # the worker it replaces keeps serving until then.
        self.child_conn.recv()
        self.child_conn.send(self.server.started and _model_loaded())

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

    def restart_all(self) -> None:
        """SIGHUP: replace each worker by a draining one (uvicorn's own would start plain
        uvicorn workers), the replacement serving before the old one drains and exits."""
        for idx, old in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new = self._new()
            new.start()
            ready = getattr(new, "wait_until_ready", None)  # uvicorn 0.36 and later
            # Not uvicorn's 5 s: a worker imports the model's libraries before it serves (and
            # each health check it answered late costs the supervisor another second).
            if ready is not None and not ready(WORKER_START_S, self.should_exit):
                new.kill()
                new.join()
                if not self.should_exit.is_set():
                    logger.error(
                        f"New child process [{new.pid}] was not ready in time; "
                        f"keeping worker [{old.pid}] and aborting the restart."
                    )
                return
            old.terminate()
            old.join()
            self.processes[idx] = new

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


def _model_loaded() -> bool:
    from ._draining import WORKER

    model_server = WORKER.get("model_server")
    return model_server is not None and model_server.model is not None
