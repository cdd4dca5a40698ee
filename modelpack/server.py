"""Deprecated alias of :mod:`modelpack.teamserver` (the team server), kept for one release.

The team server was ``modelpack.server``, one letter from ``modelpack.servers`` (the model
servers); it is ``modelpack.teamserver`` now.
"""

from __future__ import annotations

import warnings

from modelpack.teamserver import create_app

warnings.warn(
    "modelpack.server is deprecated: import modelpack.teamserver",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["create_app"]
