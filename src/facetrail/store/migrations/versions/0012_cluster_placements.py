"""cluster placements: which node runs each camera, its last move, and its checkpoint (media time stored)

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'


def upgrade() -> None:
    op.create_table(
        'camera_placements',
        sa.Column('camera', sa.String(length=200), primary_key=True),
        sa.Column('run_id', sa.String(length=32), nullable=False),
        sa.Column('node', sa.String(length=200), nullable=False),
        sa.Column('moved_from', sa.String(length=200), nullable=True),
        sa.Column('moved_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('position_s', sa.Float(), nullable=True),
        sa.Column('clock_origin', sa.DateTime(timezone=True), nullable=True),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('camera_placements')
