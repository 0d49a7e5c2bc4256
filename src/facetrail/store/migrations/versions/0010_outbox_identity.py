"""outbox identity: the person a message is about, so forget can withdraw what was not delivered yet

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'


def upgrade() -> None:
    with op.batch_alter_table('outbox') as batch:
        batch.add_column(sa.Column('identity_id', sa.Integer(), nullable=True))
        batch.create_index('ix_outbox_identity_id', ['identity_id'])


def downgrade() -> None:
    with op.batch_alter_table('outbox') as batch:
        batch.drop_index('ix_outbox_identity_id')
        batch.drop_column('identity_id')
