"""doors: consents and decisions

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('door_consents',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('identity_id', sa.Integer(), nullable=False),
    sa.Column('door', sa.String(length=200), nullable=False),
    sa.Column('method', sa.Text(), nullable=False),
    sa.Column('recorded_by', sa.String(length=200), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('factor_hash', sa.String(length=200), nullable=True),
    sa.Column('withdrawn_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('withdrawn_by', sa.String(length=200), nullable=True),
    sa.ForeignKeyConstraint(['identity_id'], ['identities.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_door_consents_identity_id', 'door_consents', ['identity_id'])
    op.create_table('door_decisions',
    sa.Column('id', _BIG_ID, nullable=False),
    sa.Column('door', sa.String(length=200), nullable=False),
    sa.Column('camera', sa.String(length=200), nullable=False),
    sa.Column('track_uid', sa.String(length=120), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('rule', sa.Text(), nullable=False),
    sa.Column('identity_id', sa.Integer(), nullable=True),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('matched_shots', sa.Integer(), nullable=False),
    sa.Column('liveness', sa.String(length=16), nullable=True),
    sa.Column('liveness_reason', sa.Text(), nullable=True),
    sa.Column('blinks', sa.Integer(), nullable=True),
    sa.Column('depth_residual', sa.Float(), nullable=True),
    sa.Column('tailgating', sa.Boolean(), nullable=False),
    sa.Column('others_present', sa.Integer(), nullable=False),
    sa.Column('snapshot_jpeg', sa.LargeBinary(), nullable=True),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('command', sa.String(length=16), nullable=True),
    sa.Column('command_error', sa.Text(), nullable=True),
    sa.Column('command_attempts', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['identity_id'], ['identities.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_door_decisions_door', 'door_decisions', ['door'])
    op.create_index('ix_door_decisions_outcome', 'door_decisions', ['outcome'])
    op.create_index('ix_door_decisions_identity_id', 'door_decisions', ['identity_id'])
    op.create_index('ix_door_decisions_decided_at', 'door_decisions', ['decided_at'])


def downgrade() -> None:
    op.drop_table('door_decisions')
    op.drop_table('door_consents')
