"""camera faults: errors in a camera's stages and consumers, counted in its status

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'


def upgrade() -> None:
    with op.batch_alter_table('camera_states') as batch:
        batch.add_column(sa.Column('faults', sa.Integer(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('last_fault', sa.Text(), nullable=True))
        batch.add_column(sa.Column('failing', sa.String(length=500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('camera_states') as batch:
        batch.drop_column('failing')
        batch.drop_column('last_fault')
        batch.drop_column('faults')
