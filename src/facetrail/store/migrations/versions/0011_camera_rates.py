"""camera rates: analysed frames against the target rate, frames dropped and skipped per second

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'


def upgrade() -> None:
    with op.batch_alter_table('camera_states') as batch:
        batch.add_column(sa.Column('target_fps', sa.Float(), nullable=True))
        batch.add_column(sa.Column('dropped_fps', sa.Float(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('skipped_motion_fps', sa.Float(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('frames_skipped_decoder', sa.Integer(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('camera_states') as batch:
        batch.drop_column('frames_skipped_decoder')
        batch.drop_column('skipped_motion_fps')
        batch.drop_column('dropped_fps')
        batch.drop_column('target_fps')
