"""``oci://HOST[:PORT]/REPO[:TAG|@sha256:HEX]``: parsed and checked (OCI distribution grammar)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelpack.errors import InvalidInputError

SCHEME = "oci://"
DEFAULT_TAG = "latest"
# The distribution spec's grammar: lowercase path components, tags up to 128 characters.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_REPO = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_HOST = re.compile(
    r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::\d{1,5})?$"
)
LOOPBACK = ("localhost", "127.0.0.1", "::1", "[::1]")


@dataclass(frozen=True)
class Reference:
    host: str  # with its port, as in the URL
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def hostname(self) -> str:
        if self.host.startswith("["):
            return self.host[: self.host.index("]") + 1]
        return self.host.rsplit(":", 1)[0] if ":" in self.host else self.host

    @property
    def is_loopback(self) -> bool:
        return self.hostname in LOOPBACK

    @property
    def target(self) -> str:
        """What the manifest is fetched by: the digest when pinned, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.host, self.repository, self.tag, digest)

    def __str__(self) -> str:
        text = f"{SCHEME}{self.host}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse(text: str) -> Reference:
    """``text`` (with or without ``oci://``) as a :class:`Reference`; a one-line error if bad."""
    usage = "use oci://HOST[:PORT]/REPOSITORY[:TAG|@sha256:DIGEST]"
    rest = text.removeprefix(SCHEME)
    host, sep, path = rest.partition("/")
    if not sep or not host or not path:
        raise InvalidInputError(f"{text!r} is not an OCI reference: {usage}")
    if not _HOST.match(host):
        raise InvalidInputError(f"{text!r}: {host!r} is not a registry host name; {usage}")
    digest = None
    if "@" in path:
        path, digest = path.split("@", 1)
        if not _DIGEST.match(digest):
            raise InvalidInputError(
                f"{text!r}: {digest!r} is not a digest (sha256: and 64 lowercase hex digits)"
            )
    tag = None
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, tag = path.rsplit(":", 1)
        if not _TAG.match(tag):
            raise InvalidInputError(
                f"{text!r}: {tag!r} is not a tag (letters, digits, '_', '.', '-'; at most 128)"
            )
    if not _REPO.match(path):
        raise InvalidInputError(
            f"{text!r}: {path!r} is not a repository name (lowercase letters, digits and "
            "'.', '_', '-' between them, components joined by '/')"
        )
    return Reference(host, path, tag, digest)
