"""door states: the latest state each door's controller reported

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'


def upgrade() -> None:
    op.create_table('door_states',
    sa.Column('door', sa.String(length=200), nullable=False),
    sa.Column('state', sa.String(length=32), nullable=False),
    sa.Column('source', sa.String(length=8), nullable=False),
    sa.Column('command_id', sa.String(length=64), nullable=True),
    sa.Column('reported_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('door')
    )


def downgrade() -> None:
    op.drop_table('door_states')
