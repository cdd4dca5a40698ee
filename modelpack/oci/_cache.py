"""``oci://`` model URIs resolved into ``$MODELPACK_HOME/cache/oci/<digest>``, one folder per
manifest digest: a URI pinned by digest and already fetched needs no network at all."""

from __future__ import annotations

from pathlib import Path

from modelpack.descriptor import DESCRIPTOR
from modelpack.oci._client import Registry
from modelpack.oci._reference import parse
from modelpack.oci._transfer import fetch


def cache_dir(digest: str) -> Path:
    from modelpack._artifact_paths import blob_key, cache_root

    hexdigest = digest.removeprefix("sha256:")
    blob_key(hexdigest)  # refuses anything but 64 hex digits before it names a path
    return cache_root() / "oci" / hexdigest


def resolve(uri: str) -> Path:
    """The local, verified model directory of ``oci://HOST/REPO[:TAG|@sha256:...]``.

    Plain HTTP for loopback registries only; credentials as ``modelpack pull`` finds them.
    """
    from modelpack._artifact_paths import _staging

    ref = parse(uri)
    if ref.digest and (cache_dir(ref.digest) / DESCRIPTOR).is_file():
        return cache_dir(ref.digest)
    with Registry(ref) as registry:
        manifest = registry.get_manifest()
        target = cache_dir(manifest[2])
        if (target / DESCRIPTOR).is_file():
            return target
        with _staging(target) as tmp:
            fetch(registry, tmp, manifest)
    return target
