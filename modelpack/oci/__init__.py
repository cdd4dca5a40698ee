"""Models as OCI artifacts in the CNCF ModelPack format (model-spec v1): push, pull, resolve.

``modelpack.load("oci://HOST/REPO:TAG")`` and ``registry.register(name, "oci://...")`` reach
:func:`resolve` through :mod:`modelpack.uris`; :func:`list_repositories` and :func:`list_tags`
read a registry's catalog and a repository's tags, :func:`manifest_digest` the manifest a tag
names now. See docs/oci.md.
"""

from __future__ import annotations

from modelpack.oci._cache import cache_dir, resolve
from modelpack.oci._client import list_repositories, list_tags, manifest_digest
from modelpack.oci._reference import Reference, parse
from modelpack.oci._transfer import DEFAULT_CHUNK_SIZE, PullResult, PushResult, pull, push

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "PullResult",
    "PushResult",
    "Reference",
    "cache_dir",
    "list_repositories",
    "list_tags",
    "manifest_digest",
    "parse",
    "pull",
    "push",
    "resolve",
]
