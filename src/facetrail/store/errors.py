"""Typed errors of the storage layer."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every error the store raises on purpose."""


class DatabaseUnavailableError(StoreError):
    """The database cannot be opened or reached; the message says which and why."""


class AuditChainError(StoreError):
    """The audit log's hash chain does not verify: a row was altered, removed or inserted."""
