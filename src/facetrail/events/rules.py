"""Which rules raise events: the ``events:`` section of the configuration, read as it is by the recorder."""

from __future__ import annotations

from datetime import timedelta

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class EventRules:
    """Which rules raise events."""

    watchlist_hit: bool = Field(default=True, title="Watchlist hits",
                                description="Event when someone on an active watchlist is recognised above the "
                                            "watchlist's threshold.")
    unknown_visitor: bool = Field(default=False, title="Unknown visitors",
                                  description="Event when an unknown face is seen.")
    seen_again: bool = Field(default=False, title="Seen again", description="Event when an unknown visitor comes back.")
    seen_again_after_s: float = Field(default=300, ge=0, title="Seen again after",
                                      description="A visit counts as 'again' only after this many seconds away.")
    snapshot_quality: int = Field(default=85, ge=10, le=100, title="Snapshot JPEG quality",
                                  description="JPEG quality of evidence snapshots and thumbnails.")

    @property
    def seen_again_after(self) -> timedelta:
        """``seen_again_after_s`` as a duration."""
        return timedelta(seconds=self.seen_again_after_s)
