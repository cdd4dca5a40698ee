"""Bearer tokens with a role: ``read`` < ``write`` < ``admin``.

Only a token's sha256 is stored; the token itself is shown once, when it is created.
Lookups are cached for a few seconds, so a revoked token stops working within ``_TTL_S``.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update

from modelpack.errors import InvalidInputError, ModelNotFoundError
from modelpack.store.db import now_ms, read, write
from modelpack.store.schema import api_tokens

ROLES = ("read", "write", "admin")
PREFIX = "mpk_"
_TTL_S = 5.0


@dataclass(frozen=True)
class Principal:
    """Who makes a call: the token's name and role (``anonymous``/admin when auth is off)."""

    name: str
    role: str

    def allows(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


ANONYMOUS = Principal("anonymous", "admin")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidInputError(f"invalid role {role!r}: use one of {', '.join(ROLES)}")
    return role


def create_token(role: str, name: str | None = None) -> str:
    """A new token with ``role``; returns the token, which is not stored anywhere."""
    check_role(role)
    token = PREFIX + secrets.token_urlsafe(32)
    with write() as conn:
        conn.execute(
            insert(api_tokens).values(
                name=name, role=role, token_sha256=_digest(token), created_at=now_ms()
            )
        )
    return token


def list_tokens() -> list[dict[str, Any]]:
    t = api_tokens.c
    query = select(t.id, t.name, t.role, t.created_at, t.revoked_at).order_by(t.id)
    with read() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def revoke_token(token_id: int) -> None:
    t = api_tokens.c
    with write() as conn:
        done = conn.execute(
            update(api_tokens)
            .where(t.id == token_id, t.revoked_at.is_(None))
            .values(revoked_at=now_ms())
        )
        if done.rowcount == 0:
            raise ModelNotFoundError(f"no active token with id {token_id}")


class TokenCache:
    def __init__(self) -> None:
        self._found: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def lookup(self, token: str) -> Principal | None:
        digest = _digest(token)
        now = time.monotonic()
        hit = self._found.get(digest)
        if hit is not None and now - hit[0] < _TTL_S:
            return hit[1]
        t = api_tokens.c
        query = select(t.id, t.name, t.role).where(t.token_sha256 == digest, t.revoked_at.is_(None))
        with read() as conn:
            row = conn.execute(query).first()
        principal = None if row is None else Principal(row.name or f"token-{row.id}", row.role)
        with self._lock:
            if len(self._found) > 10_000:
                self._found.clear()
            self._found[digest] = (now, principal)
        return principal
