"""The gallery: enrolled identities' embeddings and the vector index that searches them.

``index`` defines the ``Index`` protocol and ``SearchHits``; ``faiss_index``
is the FAISS backend (exact while small, IVF once large). The database stays
the source of truth: an index file that fails validation is rebuilt from it.
"""
