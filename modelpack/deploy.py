"""What every deployer shares: its options, its plan, its deployments, and waiting for them.

A deployer (see ``modelpack.plugins.Deployer``) declares ``options``: option key -> help text.
``modelpack deploy ... -C key=value`` is checked against it before anything is touched.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from modelpack.errors import DeploymentError, InvalidInputError


@dataclass
class Deployment:
    """One deployment as ``get``/``list`` report it (``get --json`` prints ``to_dict()``)."""

    name: str
    target: str
    model_uri: str
    status: str  # e.g. "creating", "ready", "updating", "failed", "dead", "deleted"
    endpoint: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Plan:
    """What ``create``/``update`` would do, computed without side effects.

    ``actions`` are one-line descriptions (API calls, processes, image builds); ``documents``
    are rendered manifests or request bodies, printed as multi-document YAML.
    """

    target: str
    name: str
    model_uri: str
    actions: list[str] = field(default_factory=list)
    documents: list[dict[str, Any]] = field(default_factory=list)
    image: str | None = None


def check_options(target: str, allowed: Mapping[str, str], config: Mapping[str, Any]) -> None:
    """Refuse unknown option keys, listing the valid ones."""
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        valid = ", ".join(sorted(allowed)) or "none"
        raise InvalidInputError(
            f"unknown option(s) for target {target!r}: {', '.join(unknown)} (valid: {valid})"
        )


def wait_until(
    check: Callable[[], Deployment],
    *,
    timeout: float,
    interval: float = 0.5,
    on_poll: Callable[[Deployment, float], None] | None = None,
) -> Deployment:
    """Poll ``check`` until the deployment is ready; a timeout is a DeploymentError."""
    start = time.monotonic()
    while True:
        current = check()
        elapsed = time.monotonic() - start
        if on_poll is not None:
            on_poll(current, elapsed)
        if current.status == "ready":
            return current
        if current.status in ("failed", "dead"):  # dead: the process went away while we waited
            raise DeploymentError(
                f"deployment {current.name!r} on {current.target} failed: "
                f"{current.details.get('reason', 'no reason given')}"
            )
        if elapsed >= timeout:
            raise DeploymentError(
                f"deployment {current.name!r} on {current.target} was not ready after "
                f"{timeout:.0f} s (status {current.status}"
                + (f": {current.details['reason']}" if current.details.get("reason") else "")
                + ")"
            )
        time.sleep(interval)


# A deployer that waits inside create/update (the local one swaps servers only once the new one
# answers) declares this option; the CLI fills it from --timeout unless -C sets it.
READY_TIMEOUT = "ready_timeout"
