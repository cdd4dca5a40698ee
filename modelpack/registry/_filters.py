"""The registry's small filter syntax, parsed into conditions (never into SQL text).

    name = 'iris' AND tags.team = 'a' AND alias = 'champion' AND stage IN ('Staging', 'Production')

Conditions are joined by AND; operators are ``=``, ``!=``, ``LIKE``, ``NOT LIKE``, ``IN`` and
``NOT IN``; strings are quoted with ``'`` or ``"`` (doubled to escape); tag keys are
``tags.key`` or ``tags.`any key```. See docs/registry.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelpack.errors import InvalidInputError

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^']|'')*'|"(?:[^"]|"")*")
  | (?P<backtick>`(?:[^`]|``)*`)
  | (?P<number>-?[0-9]+(?:\.[0-9]+)?)
  | (?P<op>!=|<>|=|<=|>=|<|>)
  | (?P<punct>[(),.])
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    """,
    re.VERBOSE,
)

# SQLite's INTEGER (and BIGINT elsewhere): a larger integer cannot even be bound as a parameter.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_INT64_DIGITS = 19

OPERATORS = ("=", "!=", "<", "<=", ">", ">=", "LIKE", "NOT LIKE", "IN", "NOT IN")


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    value: str | float | int
    pos: int


@dataclass(frozen=True)
class Condition:
    field: str
    key: str | None  # the tag key of ``tags.<key>``
    op: str
    values: tuple[str | int | float, ...]
    pos: int


def _error(text: str, pos: int, message: str) -> InvalidInputError:
    return InvalidInputError(f"bad filter at position {pos}: {message} (in {text!r})", pos=pos)


def _number(text: str, raw: str, pos: int) -> int | float:
    if "." in raw:
        return float(raw)
    # Digits counted first: int() refuses strings past 4,300 digits (a ValueError, not ours).
    value = int(raw) if len(raw.lstrip("-").lstrip("0")) <= _INT64_DIGITS else None
    if value is None or not INT64_MIN <= value <= INT64_MAX:
        shown = raw if len(raw) <= 40 else f"{raw[:40]}..."
        raise _error(text, pos, f"the integer {shown} is out of the signed 64-bit range")
    return value


def tokenize(text: str) -> list[Token]:
    tokens, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            what = "unterminated string" if text[pos] in "'\"`" else "unexpected character"
            raise _error(text, pos, f"{what} {text[pos]!r}")
        kind, raw = match.lastgroup or "", match.group()
        if kind == "string":
            tokens.append(Token(kind, raw, raw[1:-1].replace(raw[0] * 2, raw[0]), pos))
        elif kind == "backtick":
            tokens.append(Token("word", raw, raw[1:-1].replace("``", "`"), pos))
        elif kind == "number":
            tokens.append(Token(kind, raw, _number(text, raw, pos), pos))
        elif kind != "ws":
            tokens.append(Token(kind, raw, raw.upper() if kind == "word" else raw, pos))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str, fields: frozenset[str]) -> None:
        self.text = text
        self.fields = fields
        self.tokens = tokenize(text)
        self.i = 0

    def peek(self) -> Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def next(self, expected: str) -> Token:
        token = self.peek()
        if token is None:
            raise _error(self.text, len(self.text), f"expected {expected}, found the end")
        self.i += 1
        return token

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token is not None and token.kind == "word" and token.value == word:
            self.i += 1
            return True
        return False

    def parse(self) -> list[Condition]:
        if not self.tokens:
            return []
        conditions = [self.condition()]
        while self.peek() is not None:
            token = self.next("AND")
            if not (token.kind == "word" and token.value == "AND"):
                raise _error(self.text, token.pos, f"expected AND, found {token.text!r}")
            conditions.append(self.condition())
        return conditions

    def condition(self) -> Condition:
        token = self.next("a field name")
        if token.kind != "word" or token.text.startswith("`"):
            raise _error(self.text, token.pos, f"expected a field name, found {token.text!r}")
        field, key = token.text.lower(), None
        if field not in self.fields:
            known = ", ".join(sorted(self.fields))
            raise _error(self.text, token.pos, f"unknown field {token.text!r} (known: {known})")
        if field == "tags":
            dot = self.next("'.' after tags")
            if dot.text != ".":
                raise _error(self.text, dot.pos, "expected tags.<key>")
            name = self.next("a tag key")
            if name.kind not in ("word", "string"):
                raise _error(self.text, name.pos, f"expected a tag key, found {name.text!r}")
            key = name.text if name.kind == "word" and not name.text.startswith("`") else None
            key = key if key is not None else str(name.value)
        op = self.operator()
        if op in ("IN", "NOT IN"):
            return Condition(field, key, op, self.value_list(), token.pos)
        return Condition(field, key, op, (self.value(),), token.pos)

    def operator(self) -> str:
        token = self.next("an operator")
        if token.kind == "op":
            return "!=" if token.text == "<>" else token.text
        if token.kind == "word" and token.value in ("LIKE", "IN"):
            return str(token.value)
        if token.kind == "word" and token.value == "NOT":
            after = self.next("LIKE or IN after NOT")
            if after.kind == "word" and after.value in ("LIKE", "IN"):
                return f"NOT {after.value}"
        raise _error(self.text, token.pos, f"expected one of {', '.join(OPERATORS)}")

    def value(self) -> str | int | float:
        token = self.next("a quoted string or a number")
        if token.kind not in ("string", "number"):
            raise _error(
                self.text, token.pos, f"expected a quoted string or a number, found {token.text!r}"
            )
        return token.value

    def value_list(self) -> tuple[str | int | float, ...]:
        opening = self.next("'('")
        if opening.text != "(":
            raise _error(self.text, opening.pos, "expected '(' after IN")
        values = [self.value()]
        while True:
            token = self.next("',' or ')'")
            if token.text == ")":
                return tuple(values)
            if token.text != ",":
                raise _error(self.text, token.pos, f"expected ',' or ')', found {token.text!r}")
            values.append(self.value())


def parse_filter(text: str | None, fields: frozenset[str]) -> list[Condition]:
    """The AND-ed conditions of ``text``; an InvalidInputError names the position of a mistake."""
    return _Parser(text or "", fields).parse()
