"""What the registry returns: model versions, registered models, stage transitions, pages."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")
READY = "READY"  # the status of a version once its row is written


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    source: str
    run_id: str | None
    aliases: list[str]
    stage: str | None
    tags: dict[str, str]
    description: str | None
    status: str
    parent: str | None  # "NAME/VERSION" of the version this one was derived from
    flavors: list[str]
    signature: dict[str, Any] | None
    created_at: int
    updated_at: int
    descriptor_sha256: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    description: str | None
    tags: dict[str, str]
    aliases: dict[str, int]
    latest_version: int | None
    created_at: int
    updated_at: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StageTransition:
    name: str
    version: int
    from_stage: str | None
    to_stage: str | None
    user: str
    timestamp: int
    comment: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Page(Generic[T]):
    items: list[T] = field(default_factory=list)
    next_page_token: str | None = None

    def __iter__(self) -> Any:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> T:
        return self.items[index]
