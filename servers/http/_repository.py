"""The many-models server's models: each one's state, loading (once, however many ask), unloading,
the memory budget with least-recently-used unload, and following a registry alias."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread

from modelpack._startup import lean_startup
from modelpack.errors import (
    MemoryBudgetError,
    ModelNotFoundError,
    ModelNotReadyError,
    ModelpackError,
    PredictionError,
)

from ._loading import uri_loader
from ._metrics import MultiModelMetrics
from ._served import ServedModel, ServeOptions
from ._sources import alias_of, check_model_name

log = logging.getLogger("modelpack.serve")

READY, LOADING, UNLOADING, UNAVAILABLE = "READY", "LOADING", "UNLOADING", "UNAVAILABLE"


class BudgetFullError(MemoryBudgetError):
    """The model fits ``--max-memory`` alone, not beside the models that stayed busy answering
    requests while the load waited (``ModelRepository.ROOM_WAIT_S``): a later request tries
    again."""


@dataclass(frozen=True)
class LoadSettings:
    """How every model of one server loads (the CLI's trust, runtime and device)."""

    trust: bool | list[str] | None = None
    flavor: str | None = None
    device: str = "cpu"
    lazy: bool = False
    max_memory: int | None = None  # bytes of model files loaded at once
    follow_aliases: float | None = None  # seconds between polls of the registry


class Loaded:
    """One loaded version of a model, and how many requests are using it right now."""

    __slots__ = ("footprint", "in_flight", "model", "version")

    def __init__(self, model: ServedModel, version: str, footprint: int) -> None:
        self.model = model
        self.version = version
        self.footprint = footprint
        self.in_flight = 0


class Entry:
    def __init__(self, name: str, uri: str, options: ServeOptions) -> None:
        self.name = name
        self.uri = uri
        self.options = options
        self.current: Loaded | None = None
        self.state = UNAVAILABLE
        self.reason = "not loaded yet"
        self.error: ModelpackError | None = None  # the last load's failure
        self.unloaded = False  # unloaded on request: no load on demand until loaded again
        self.task: asyncio.Task[Loaded] | None = None
        self.last_used = 0.0

    def row(self) -> dict[str, str]:
        version = self.current.version if self.current else ""
        return {"name": self.name, "version": version, "state": self.state, "reason": self.reason}


def _footprint(path: Path) -> int:
    """What a model is counted for under the budget: the size of its files (see docs)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(folder, name)).st_size
    return total


def _resolve(uri: str) -> tuple[Path, str]:
    """The local folder of ``uri`` and the version it is: the registry's, else ``1``."""
    from modelpack.uris import resolve

    if uri.startswith("models:"):
        from modelpack._resolvers import find_model_version
        from modelpack.artifacts import materialize

        # The version found, by number: what is loaded is the version the index reports.
        found = find_model_version(uri)
        return materialize(found.descriptor_sha256), str(found.version)
    return resolve(uri), "1"


# A full collection costs ~0.1 s of the GIL in a process that imported torch and scikit-learn,
# and an unload to make room sits on the request that is waiting for a load: only a model this
# big is worth one (its memory back now, should a reference cycle hold it). Smaller ones are
# freed by reference counting, or by the collector's own next run.
_COLLECT_AFTER_BYTES = 64 * 1024 * 1024


def _closed(model: ServedModel, footprint: int) -> None:
    model.close()
    if footprint >= _COLLECT_AFTER_BYTES:
        gc.collect()


class ModelRepository:
    """Every model the server knows, by name, and what is loaded."""

    # How long a load waits for a loaded model to finish its requests, when every one is busy
    # and the new one does not fit beside them, before it answers 503 (and the request's
    # timeout, if shorter).
    ROOM_WAIT_S = 5.0

    def __init__(
        self,
        models: Mapping[str, str],
        options: ServeOptions,
        per_model: Mapping[str, Mapping[str, Any]],
        settings: LoadSettings,
        metrics: MultiModelMetrics,
        discover: Callable[[str], str | None] | None = None,
    ) -> None:
        self.options = options
        self.per_model = per_model
        self.settings = settings
        self.metrics = metrics
        # A name the server does not have yet, looked up in its repository (Triton's load).
        self.discover = discover or (lambda name: None)
        self.entries: dict[str, Entry] = {}
        self.used = 0  # bytes counted against --max-memory: loaded, loading and draining
        self.started = False  # the start-up loads have all finished (each loaded or failed)
        # Set when a loaded model stops answering its last request, or memory is given back:
        # a load waiting for room looks again.
        self._released = asyncio.Event()
        for name, uri in models.items():
            self.add(name, uri)

    # -- the models ------------------------------------------------------------------------

    def add(self, name: str, uri: str) -> Entry:
        check_model_name(name)
        given = {k: v for k, v in self.per_model.get(name, {}).items() if k != "uri"}
        entry = Entry(name, uri, dataclasses.replace(self.options, name=name, **given))
        self.entries[name] = entry
        return entry

    def entry(self, name: str) -> Entry:
        entry = self.entries.get(name)
        if entry is None:
            have = ", ".join(sorted(self.entries)) or "none"
            raise ModelNotFoundError(f"no model named {name!r}; this server has: {have}")
        return entry

    def index(self, *, ready_only: bool = False) -> list[dict[str, str]]:
        rows = [e.row() for _, e in sorted(self.entries.items())]
        return [r for r in rows if r["state"] == READY] if ready_only else rows

    def placed(self) -> dict[str, Mapping[str, int]]:
        return {n: e.current.model.placed for n, e in self.entries.items() if e.current}

    def readiness(self) -> dict[str, bool]:
        return {n: e.current is not None for n, e in self.entries.items()}

    # -- serving a request -----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def using(self, name: str, version: str | None = None) -> AsyncIterator[Loaded]:
        """The model ``name`` (loaded on demand), held loaded until the request is answered."""
        entry = self.entry(name)
        loaded = await self._available(entry)
        if version is not None and version != loaded.version:
            raise ModelNotFoundError(
                f"model {name!r} has version {loaded.version} loaded, not {version}"
            )
        entry.last_used = time.monotonic()
        loaded.in_flight += 1
        try:
            yield loaded
        finally:
            loaded.in_flight -= 1
            if not loaded.in_flight:
                self._released.set()

    async def _available(self, entry: Entry) -> Loaded:
        # Loops only when the model was unloaded again (to make room) before this request ran.
        while True:
            if entry.current is not None:
                return entry.current
            if entry.unloaded:
                raise ModelNotReadyError(
                    f"model {entry.name!r} is unloaded; load it with "
                    f"POST /v2/repository/models/{entry.name}/load",
                    retry_after=60,
                )
            if entry.error is not None and entry.task is None:
                raise ModelNotReadyError(
                    f"model {entry.name!r} failed to load: {entry.error.message}", retry_after=60
                )
            try:
                await self.load(entry)
            except MemoryBudgetError:
                raise
            except ModelpackError as exc:
                raise ModelNotReadyError(
                    f"model {entry.name!r} failed to load: {exc.message}", retry_after=60
                ) from None

    async def load(self, entry: Entry) -> Loaded:
        """Load ``entry`` once, however many callers ask at the same time."""
        if entry.current is not None:
            return entry.current
        if entry.task is None:
            entry.task = asyncio.create_task(self._load(entry))
        return await asyncio.shield(entry.task)

    async def _load(self, entry: Entry) -> Loaded:
        entry.state, entry.reason = LOADING, ""
        try:
            loaded = await self._load_version(entry)
        except asyncio.CancelledError:
            entry.state, entry.reason = UNAVAILABLE, "not loaded: the server is stopping"
            raise
        except Exception as exc:
            failure = _as_modelpack_error(exc)
            if isinstance(exc, BudgetFullError):  # not the model's fault: the next request tries
                entry.state, entry.reason = UNAVAILABLE, f"not loaded: {failure.message}"
            else:
                entry.state, entry.reason, entry.error = UNAVAILABLE, failure.message, failure
                log.error("model %r failed to load: %s", entry.name, failure.message)
            raise failure from exc
        finally:
            entry.task = None
        entry.current, entry.error, entry.unloaded = loaded, None, False
        entry.state, entry.reason, entry.last_used = READY, "", time.monotonic()
        return loaded

    async def _load_version(self, entry: Entry) -> Loaded:
        """Load ``entry``'s model (its alias's version now) under the budget; not yet served."""
        start = time.perf_counter()
        path, version = await anyio.to_thread.run_sync(_resolve, entry.uri)
        footprint = await anyio.to_thread.run_sync(_footprint, path)
        await self._make_room(footprint, keep=entry)
        self.used += footprint
        try:
            loader = uri_loader(
                str(path),
                trust=self.settings.trust,
                flavor=self.settings.flavor,
                device=self.settings.device,
            )
            on_batch = self.metrics.batch_rows.labels(entry.name).observe
            # Models come and go here: the collector keeps running (modelpack/_startup.py).
            with lean_startup(collector=False, docs=entry.options.owns_process):
                model = await anyio.to_thread.run_sync(loader, entry.options, on_batch)
        except BaseException:
            self.used -= footprint
            raise
        seconds = time.perf_counter() - start
        self.metrics.load_seconds.labels(entry.name).set(seconds)
        log.info("model %r version %s ready in %.2fs", entry.name, version, seconds)
        return Loaded(model, version, footprint)

    async def _make_room(self, need: int, *, keep: Entry) -> None:
        budget = self.settings.max_memory
        if budget is None:
            return
        if need > budget:
            raise MemoryBudgetError(
                f"model {keep.name!r} has {need:,} bytes of files, more than the whole "
                f"--max-memory budget of {budget:,} bytes",
                retry_after=3600,
            )
        deadline = time.monotonic() + min(self.ROOM_WAIT_S, self.options.timeout_s)
        while self.used + need > budget:
            idle = [
                e
                for e in self.entries.values()
                if e is not keep and e.current is not None and e.current.in_flight == 0
            ]
            left = deadline - time.monotonic()
            if not idle and left > 0:  # every loaded model is answering: wait for one to finish
                self._released.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._released.wait(), left)
                continue
            if not idle:
                raise BudgetFullError(
                    f"model {keep.name!r} ({need:,} bytes) does not fit --max-memory "
                    f"({budget:,} bytes, {self.used:,} in use by models answering requests): "
                    "retry shortly",
                    retry_after=1,
                )
            victim = min(idle, key=lambda e: e.last_used)
            log.info("unloading model %r (least recently used) to load %r", victim.name, keep.name)
            # The server's choice, not a client's: loaded again on its next request.
            await self.unload(
                victim, reason="unloaded to make room (least recently used)", explicit=False
            )

    async def unload(
        self, entry: Entry, *, reason: str = "unloaded", explicit: bool = True
    ) -> None:
        """Stop serving ``entry``: new requests no longer get it, those in flight finish.

        ``explicit``: a client asked; the model is not loaded on demand until asked again.
        """
        loaded, entry.current = entry.current, None
        entry.unloaded = explicit
        if loaded is None:
            entry.state, entry.reason = UNAVAILABLE, reason
            return
        entry.state, entry.reason = UNLOADING, reason
        await self._retire(loaded)
        if entry.current is None:  # unless loaded again meanwhile
            entry.state = UNAVAILABLE

    async def _retire(self, loaded: Loaded) -> None:
        """Close a version no longer served once the requests still using it are answered."""
        deadline = time.monotonic() + self.options.timeout_s
        while loaded.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        try:
            await anyio.to_thread.run_sync(_closed, loaded.model, loaded.footprint)
        finally:
            self.used -= loaded.footprint
            self._released.set()

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Load every model now unless ``--lazy`` (one after the other: loading is CPU-bound)."""
        try:
            if not self.settings.lazy:
                for entry in list(self.entries.values()):
                    with contextlib.suppress(ModelpackError):  # its state says why
                        await self.load(entry)
        finally:
            self.started = True

    async def follow(self) -> None:
        """Poll the registry; when a followed alias moves, load its new version, switch to it
        (one assignment on the event loop: every request gets the old or the new), then unload
        the old once the requests using it are answered."""
        interval = self.settings.follow_aliases
        if interval is None:
            return
        while True:
            await asyncio.sleep(interval)
            for entry in list(self.entries.values()):
                aliased = alias_of(entry.uri)
                current = entry.current
                if aliased is None or current is None or entry.task is not None:
                    continue
                try:
                    await self._follow(entry, aliased, current)
                except Exception as exc:  # the old version keeps serving; try again next poll
                    log.warning("following %s for model %r: %s", entry.uri, entry.name, exc)

    async def _follow(self, entry: Entry, aliased: tuple[str, str], current: Loaded) -> None:
        from modelpack import registry

        found = await anyio.to_thread.run_sync(registry.get_by_alias, *aliased)
        if str(found.version) == current.version:
            return
        log.info(
            "%s moved from version %s to %s: loading it", entry.uri, current.version, found.version
        )
        new = await self._load_version(entry)
        if entry.current is not current:  # unloaded or reloaded meanwhile: not ours to switch
            await self._retire(new)
            return
        entry.current = new
        await self._retire(current)

    async def close(self) -> None:
        for entry in self.entries.values():
            if entry.current is not None:
                await anyio.to_thread.run_sync(entry.current.model.close)


def _as_modelpack_error(exc: Exception) -> ModelpackError:
    if isinstance(exc, ModelpackError):
        return exc
    return PredictionError(f"{type(exc).__name__}: {exc}")
