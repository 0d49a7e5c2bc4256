"""Retention applied in one place: video data per class, expired watchlists and people, audited once.

``facetrail run`` (every ``purge_interval_s``), the API and dashboard (an admin's purge on demand) and
``facetrail purge`` all call ``apply_retention``. Where no configuration is at hand, ``retention_in_effect``
finds the retention that applies: the last pipeline run's, else the defaults.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from pydantic import TypeAdapter
from sqlalchemy import select
from sqlalchemy.orm import Session

from facetrail.config.schema import FacetrailConfig, RetentionConfig
from facetrail.gallery.gallery import Gallery
from facetrail.store.media import ClipFiles
from facetrail.store.models import AuditEntry, utcnow
from facetrail.store.people import PurgeReport, purge_expired
from facetrail.store.retention import RetentionPolicy, RetentionReport, delete_expired, record_purge


@dataclass(frozen=True)
class RetentionOutcome:
    """What one application of retention removed: video data per class, and expired watchlists and people."""

    data: RetentionReport
    people: PurgeReport
    clips: int = 0  # event clips deleted with their event or their snapshot

    @property
    def counts(self) -> dict[str, int]:
        """Rows removed (or images blanked) per class, classes with nothing removed left out."""
        people = {"watchlists": len(self.people.expired_watchlists), "identities": len(self.people.forgotten),
                  "clips": self.clips}
        return {**self.data.counts, **{k: v for k, v in people.items() if v}}

    @property
    def total(self) -> int:
        """Everything the purge touched."""
        return sum(self.counts.values())


def retention_in_effect(session: Session, config: FacetrailConfig | None) -> tuple[str, RetentionConfig]:
    """(where it comes from, the retention): the configuration, else the last pipeline run's, else the defaults."""
    if config is not None:
        return "configuration", config.retention
    details = session.scalar(select(AuditEntry.details).where(AuditEntry.action == "run.start")
                             .order_by(AuditEntry.id.desc()).limit(1))
    recorded = json.loads(details).get("retention") if details else None
    if recorded:
        return "last pipeline run", TypeAdapter(RetentionConfig).validate_python(recorded)
    return "defaults", RetentionConfig()


def apply_retention(gallery: Gallery, retention: RetentionPolicy, *, actor: str = "retention",
                    now: datetime | None = None) -> RetentionOutcome:
    """Delete everything past its retention in one transaction, with one ``retention.purge`` audit entry.

    Video data (sightings, visitors, events, thumbnails, snapshots, event clips, door decisions, delivered messages)
    goes by ``retention`` (the configuration's ``retention:`` section is one); watchlists past their expiry
    and people past their ``retain_until`` are removed too (each also logged on its own), and their templates
    leave the vector index.
    """
    moment = now or utcnow()
    with gallery.db.session() as session:
        data = delete_expired(session, retention, now=moment)
        people = purge_expired(session, now=moment, actor=actor)
        session.flush()  # the sweep below reads the events that are left
        clips = ClipFiles(gallery.settings.data_dir).sweep(session, older_than=moment - retention.thumbnails)
        outcome = RetentionOutcome(data, people, clips)
        record_purge(session, outcome.counts, actor=actor)
    if people.template_ids:
        gallery.remove_from_index(people.template_ids)
        gallery.save_index()
    gallery.sync_sightings()  # deleted sightings leave the history search's index
    return outcome
