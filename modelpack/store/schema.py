"""Tables of the registry and tracking store (SQLAlchemy Core), as of the head migration.

Times are integer milliseconds since the epoch (UTC). The migrations in ``migrations/versions``
create exactly this schema; a test compares the two.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

NAME = 256
KEY = 256

metadata = MetaData()

registered_models = Table(
    "registered_models",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(NAME), nullable=False, unique=True),
    Column("description", Text),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("last_version", Integer, nullable=False, server_default="0"),
)

model_tags = Table(
    "model_tags",
    metadata,
    Column("model_id", Integer, ForeignKey("registered_models.id"), nullable=False),
    Column("key", String(KEY), nullable=False),
    Column("value", Text, nullable=False),
    PrimaryKeyConstraint("model_id", "key"),
)

model_versions = Table(
    "model_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_id", Integer, ForeignKey("registered_models.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("source", Text, nullable=False),
    Column("run_id", String(64)),
    Column("parent_name", String(NAME)),
    Column("parent_version", Integer),
    Column("description", Text),
    Column("status", String(32), nullable=False),
    Column("stage", String(64)),
    Column("descriptor_sha256", String(64), nullable=False),
    Column("flavors", Text, nullable=False),
    Column("signature", Text),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    UniqueConstraint("model_id", "version", name="uq_model_versions_model_version"),
    Index("ix_model_versions_run_id", "run_id"),
    Index("ix_model_versions_stage", "stage"),
    Index("ix_model_versions_created_at", "created_at"),
)

version_tags = Table(
    "version_tags",
    metadata,
    Column("version_id", Integer, ForeignKey("model_versions.id"), nullable=False),
    Column("key", String(KEY), nullable=False),
    Column("value", Text, nullable=False),
    PrimaryKeyConstraint("version_id", "key"),
    Index("ix_version_tags_key_value", "key", "value"),
)

aliases = Table(
    "aliases",
    metadata,
    Column("model_id", Integer, ForeignKey("registered_models.id"), nullable=False),
    Column("alias", String(KEY), nullable=False),
    Column("version_id", Integer, ForeignKey("model_versions.id"), nullable=False),
    PrimaryKeyConstraint("model_id", "alias"),
    Index("ix_aliases_version_id", "version_id"),
)

stage_transitions = Table(
    "stage_transitions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_id", Integer, ForeignKey("registered_models.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("from_stage", String(64)),
    Column("to_stage", String(64)),
    Column("user", String(NAME), nullable=False),
    Column("timestamp", BigInteger, nullable=False),
    Column("comment", Text),
    Index("ix_stage_transitions_model_version", "model_id", "version"),
)

experiments = Table(
    "experiments",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(NAME), nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("experiment_id", Integer, ForeignKey("experiments.id"), nullable=False),
    Column("parent_run_id", String(32), ForeignKey("runs.id")),
    Column("name", String(NAME)),
    Column("status", String(32), nullable=False),
    Column("start_time", BigInteger, nullable=False),
    Column("end_time", BigInteger),
    Index("ix_runs_experiment_id", "experiment_id"),
    Index("ix_runs_parent_run_id", "parent_run_id"),
)

params = Table(
    "params",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.id"), nullable=False),
    Column("key", String(KEY), nullable=False),
    Column("value", Text, nullable=False),
    PrimaryKeyConstraint("run_id", "key"),
)

metrics = Table(
    "metrics",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(32), ForeignKey("runs.id"), nullable=False),
    Column("key", String(KEY), nullable=False),
    Column("value", Float, nullable=False),
    Column("step", BigInteger, nullable=False, server_default="0"),
    Column("timestamp", BigInteger, nullable=False),
    Index("ix_metrics_run_key_step", "run_id", "key", "step"),
)

run_tags = Table(
    "run_tags",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.id"), nullable=False),
    Column("key", String(KEY), nullable=False),
    Column("value", Text, nullable=False),
    PrimaryKeyConstraint("run_id", "key"),
)

run_artifacts = Table(
    "run_artifacts",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.id"), nullable=False),
    Column("path", Text, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    PrimaryKeyConstraint("run_id", "path"),
)

# Bearer tokens of the team server: only the token's sha256 is stored, never the token.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(NAME)),
    Column("role", String(16), nullable=False),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger),
)
