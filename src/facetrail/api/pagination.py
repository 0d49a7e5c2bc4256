"""Cursor pagination: newest first by id; the cursor is the last id a page returned."""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field

from facetrail.api.errors import ApiError

T = TypeVar("T")
MAX_LIMIT = 200


class Page(BaseModel, Generic[T]):
    """One page of results and the cursor of the next (None at the end)."""

    items: list[T]
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next page")


class CountedPage(Page[T], Generic[T]):
    """A page that also says how many items match across all pages."""

    total: int = Field(description="how many items match the query, across all pages")


def encode(last_id: int) -> str:
    """Opaque cursor for 'after this id'."""
    return base64.urlsafe_b64encode(str(last_id).encode()).decode().rstrip("=")


def decode(cursor: str | None) -> int | None:
    """The id a cursor stands for; 400 when it is not one of ours."""
    if not cursor:
        return None
    try:
        value = int(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
    except (ValueError, UnicodeDecodeError):
        value = -1
    if not 0 < value < 2**63:
        raise ApiError(400, "bad_cursor", "the cursor is not valid; use next_cursor from the previous page")
    return value


def page(rows: Sequence[Any], limit: int, item: Callable[[Any], T]) -> Page[T]:
    """A page from ``limit + 1`` rows fetched newest first: the extra row only says there is more."""
    items = [item(row) for row in rows[:limit]]
    return Page(items=items, next_cursor=next_cursor(rows, limit))


def next_cursor(rows: Sequence[Any], limit: int) -> str | None:
    """The cursor after a page of ``limit`` rows, from ``limit + 1`` fetched (None when no row is left)."""
    return encode(rows[limit - 1].id) if len(rows) > limit else None
