"""Storage: SQLAlchemy models, sessions, migrations, the audit log and retention.

The store knows nothing of models or cameras: embeddings are opaque float32
vectors tagged with the id of the model that made them.
"""
