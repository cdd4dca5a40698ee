"""The team server: ``modelpack server`` shares one registry and its runs over HTTP.

``create_app`` builds the Starlette app over the SQL store and artifact store of this process
(``MODELPACK_STORE_URI``, ``MODELPACK_ARTIFACT_URI``); clients reach it by setting
``MODELPACK_TRACKING_URI=http://HOST:PORT``. See docs/server.md.
"""

from __future__ import annotations

from modelpack.teamserver._app import create_app

__all__ = ["create_app"]
