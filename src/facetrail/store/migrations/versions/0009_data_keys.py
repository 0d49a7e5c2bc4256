"""data keys: one wrapped AES key per identity, unknown sighting or visitor (faces encrypted at rest)

Existing plaintext templates, embeddings and thumbnails are encrypted by the
gallery's first start after this migration (``gallery/sealing.py``), because
the master key is not the migration's to know.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'


def upgrade() -> None:
    op.create_table(
        'data_keys',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), primary_key=True),
        sa.Column('owner_kind', sa.String(length=16), nullable=False),
        sa.Column('owner_id', sa.BigInteger(), nullable=False),
        sa.Column('wrapped', sa.LargeBinary(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint('owner_kind', 'owner_id', name='uq_data_key_owner'),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table('data_keys')
