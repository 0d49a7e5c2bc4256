"""video pipeline: visitors, sightings, events, reviews, outbox; four-eyes watchlists

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    with op.batch_alter_table('watchlists', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reviewers_required', sa.Integer(), nullable=False, server_default='1'))

    op.create_table('visitors',
    sa.Column('id', _BIG_ID, nullable=False),
    sa.Column('model_id', sa.String(length=200), nullable=False),
    sa.Column('centroid', sa.LargeBinary(), nullable=False),
    sa.Column('dim', sa.Integer(), nullable=False),
    sa.Column('sightings', sa.Integer(), nullable=False),
    sa.Column('first_seen', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_visitors_last_seen', 'visitors', ['last_seen'])

    op.create_table('sightings',
    sa.Column('id', _BIG_ID, nullable=False),
    sa.Column('track_uid', sa.String(length=120), nullable=False),
    sa.Column('camera', sa.String(length=200), nullable=False),
    sa.Column('identity_id', sa.Integer(), nullable=True),
    sa.Column('visitor_id', _BIG_ID, nullable=True),
    sa.Column('first_seen', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen', sa.DateTime(timezone=True), nullable=False),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('quality', sa.Float(), nullable=False),
    sa.Column('frames', sa.Integer(), nullable=False),
    sa.Column('watchlist_hit', sa.Boolean(), nullable=False),
    sa.Column('embedding', sa.LargeBinary(), nullable=True),
    sa.Column('dim', sa.Integer(), nullable=True),
    sa.Column('model_id', sa.String(length=200), nullable=True),
    sa.Column('thumbnail_jpeg', sa.LargeBinary(), nullable=True),
    sa.ForeignKeyConstraint(['identity_id'], ['identities.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['visitor_id'], ['visitors.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('track_uid')
    )
    op.create_index('ix_sightings_camera', 'sightings', ['camera'])
    op.create_index('ix_sightings_identity_id', 'sightings', ['identity_id'])
    op.create_index('ix_sightings_visitor_id', 'sightings', ['visitor_id'])
    op.create_index('ix_sightings_first_seen', 'sightings', ['first_seen'])

    op.create_table('events',
    sa.Column('id', _BIG_ID, nullable=False),
    sa.Column('uid', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('camera', sa.String(length=200), nullable=False),
    sa.Column('sighting_id', _BIG_ID, nullable=True),
    sa.Column('identity_id', sa.Integer(), nullable=True),
    sa.Column('visitor_id', _BIG_ID, nullable=True),
    sa.Column('watchlist_id', sa.Integer(), nullable=True),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('snapshot_jpeg', sa.LargeBinary(), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('reviewers_required', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['sighting_id'], ['sightings.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['identity_id'], ['identities.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['visitor_id'], ['visitors.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['watchlist_id'], ['watchlists.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('uid')
    )
    op.create_index('ix_events_kind', 'events', ['kind'])
    op.create_index('ix_events_sighting_id', 'events', ['sighting_id'])
    op.create_index('ix_events_identity_id', 'events', ['identity_id'])
    op.create_index('ix_events_started_at', 'events', ['started_at'])
    op.create_index('ix_events_state', 'events', ['state'])

    op.create_table('event_reviews',
    sa.Column('id', _BIG_ID, nullable=False),
    sa.Column('event_id', _BIG_ID, nullable=False),
    sa.Column('reviewer', sa.String(length=200), nullable=False),
    sa.Column('decision', sa.String(length=16), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['event_id'], ['events.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('event_id', 'reviewer', name='uq_review_event_reviewer')
    )
    op.create_index('ix_event_reviews_event_id', 'event_reviews', ['event_id'])

    op.create_table('outbox',
    sa.Column('id', _BIG_ID, nullable=False),
    sa.Column('message_id', sa.String(length=64), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('destination', sa.String(length=500), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('retain', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('message_id')
    )
    op.create_index('ix_outbox_next_attempt_at', 'outbox', ['next_attempt_at'])
    op.create_index('ix_outbox_delivered_at', 'outbox', ['delivered_at'])


def downgrade() -> None:
    op.drop_table('outbox')
    op.drop_table('event_reviews')
    op.drop_table('events')
    op.drop_table('sightings')
    op.drop_table('visitors')
    with op.batch_alter_table('watchlists', schema=None) as batch_op:
        batch_op.drop_column('reviewers_required')
