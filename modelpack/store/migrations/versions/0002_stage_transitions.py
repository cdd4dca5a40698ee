"""Stage-transition audit log and the indexes that keep version search fast.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stage_transitions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("registered_models.id"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("from_stage", sa.String(64)),
        sa.Column("to_stage", sa.String(64)),
        sa.Column("user", sa.String(256), nullable=False),
        sa.Column("timestamp", sa.BigInteger, nullable=False),
        sa.Column("comment", sa.Text),
    )
    op.create_index(
        "ix_stage_transitions_model_version", "stage_transitions", ["model_id", "version"]
    )
    op.create_index("ix_model_versions_stage", "model_versions", ["stage"])
    op.create_index("ix_model_versions_created_at", "model_versions", ["created_at"])
    op.create_index("ix_version_tags_key_value", "version_tags", ["key", "value"])
    op.create_index("ix_aliases_version_id", "aliases", ["version_id"])


def downgrade() -> None:
    op.drop_index("ix_aliases_version_id", "aliases")
    op.drop_index("ix_version_tags_key_value", "version_tags")
    op.drop_index("ix_model_versions_created_at", "model_versions")
    op.drop_index("ix_model_versions_stage", "model_versions")
    op.drop_index("ix_stage_transitions_model_version", "stage_transitions")
    op.drop_table("stage_transitions")
