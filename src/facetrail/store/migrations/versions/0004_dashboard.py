"""dashboard: login sessions, cameras' reported status

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'


def upgrade() -> None:
    op.create_table('web_sessions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token_sha256', sa.String(length=64), nullable=False),
    sa.Column('api_key_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['api_key_id'], ['api_keys.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_sha256')
    )
    op.create_index('ix_web_sessions_api_key_id', 'web_sessions', ['api_key_id'])
    op.create_index('ix_web_sessions_expires_at', 'web_sessions', ['expires_at'])
    op.create_table('camera_states',
    sa.Column('camera', sa.String(length=200), nullable=False),
    sa.Column('run_id', sa.String(length=32), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('source', sa.String(length=1000), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_frame_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('analysed_fps', sa.Float(), nullable=False),
    sa.Column('frames_analysed', sa.Integer(), nullable=False),
    sa.Column('frames_skipped_motion', sa.Integer(), nullable=False),
    sa.Column('frames_dropped', sa.Integer(), nullable=False),
    sa.Column('faces_in_frame', sa.Integer(), nullable=False),
    sa.Column('frame_jpeg', sa.LargeBinary(), nullable=True),
    sa.Column('frame_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('camera')
    )
    op.create_index('ix_camera_states_updated_at', 'camera_states', ['updated_at'])


def downgrade() -> None:
    op.drop_table('camera_states')
    op.drop_table('web_sessions')
