"""`facetrail doors consent|consents|withdraw|log`: residents' consents and the door decision log."""

from __future__ import annotations

import argparse
import getpass
import json
import sys

from rich.table import Table
from sqlalchemy import select

from facetrail.cli.common import CommandError, actor_of, add_gallery_options, opened_gallery, out
from facetrail.gallery.people import resolve_identity, withdraw_door_consent
from facetrail.store.doors import ANY_DOOR, consents_of, record_consent
from facetrail.store.models import DoorDecisionRecord, Identity

OUTCOMES = ("grant", "deny", "no_decision", "pending")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the subcommand group."""
    parser = sub.add_parser("doors", help="record or withdraw residents' consents; read the door decision log")
    actions = parser.add_subparsers(dest="doors_action", metavar="ACTION", required=True)
    consent = actions.add_parser("consent", help="record a person's consent to be recognised at a door (audited)")
    consent.add_argument("person", help="identity id or name")
    consent.add_argument("--door", required=True, help=f"the door's name in the configuration, or {ANY_DOOR} "
                                                       "for every door")
    consent.add_argument("--method", required=True, help="how it was given, e.g. 'signed form 2026-114'")
    consent.add_argument("--factor", action="store_true",
                         help="also set the person's PIN or card number (asked for, or read from standard input; "
                              "never on the command line); stored only as a salted hash")
    add_gallery_options(consent)
    consent.set_defaults(run=run_consent)
    consents = actions.add_parser("consents", help="a person's consents, in force and withdrawn")
    consents.add_argument("person", help="identity id or name")
    add_gallery_options(consents)
    consents.set_defaults(run=run_consents)
    withdraw = actions.add_parser("withdraw", help="withdraw a consent; the person's face templates are deleted "
                                                   "unless another consent is in force")
    withdraw.add_argument("consent", type=int, help="consent id (see `facetrail doors consents PERSON`)")
    add_gallery_options(withdraw)
    withdraw.set_defaults(run=run_withdraw)
    log = actions.add_parser("log", help="door decisions, newest first, with their reasons")
    log.add_argument("--door", help="only this door")
    log.add_argument("--outcome", choices=OUTCOMES, help="only this outcome")
    log.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    log.add_argument("--json", action="store_true", help="print JSON for machines")
    add_gallery_options(log)
    log.set_defaults(run=run_log)


def run_consent(args: argparse.Namespace) -> int:
    """Record one consent."""
    factor = _read_factor() if args.factor else None
    with opened_gallery(args) as gallery, gallery.db.session() as session:
        identity = resolve_identity(session, args.person)
        recorded = record_consent(session, identity.id, args.door, method=args.method, actor=actor_of(args),
                                  factor=factor)
        line = (f"consent {recorded.id}: {identity.display_name} at door {recorded.door}"
                f"{' with a second factor' if factor else ''}")
    out.print(line, markup=False)
    return 0


def run_consents(args: argparse.Namespace) -> int:
    """List a person's consents."""
    with opened_gallery(args) as gallery, gallery.db.session() as session:
        identity = resolve_identity(session, args.person)
        rows = consents_of(session, identity.id)
        table = Table(title=f"{identity.display_name}: {len(rows)} consent(s)", title_justify="left")
        for column in ("id", "door", "how", "recorded", "second factor", "withdrawn"):
            table.add_column(column)
        for row in rows:
            withdrawn = f"{row.withdrawn_at:%Y-%m-%d %H:%M} by {row.withdrawn_by}" if row.withdrawn_at else "-"
            table.add_row(str(row.id), row.door, row.method, f"{row.recorded_at:%Y-%m-%d %H:%M} by {row.recorded_by}",
                          "yes" if row.factor_hash else "no", withdrawn)
    out.print(table)
    return 0


def run_withdraw(args: argparse.Namespace) -> int:
    """Withdraw one consent."""
    with opened_gallery(args) as gallery:
        withdrawal = withdraw_door_consent(gallery, args.consent, actor=actor_of(args))
    kept = (f"templates kept: {withdrawal.other_consents} other consent(s) in force" if withdrawal.other_consents
            else f"{len(withdrawal.template_ids)} face template(s) deleted")
    out.print(f"consent {args.consent} withdrawn; {kept}", markup=False)
    return 0


def run_log(args: argparse.Namespace) -> int:
    """Print door decisions."""
    with opened_gallery(args) as gallery, gallery.db.session() as session:
        query = (select(DoorDecisionRecord, Identity.display_name)
                 .outerjoin(Identity, Identity.id == DoorDecisionRecord.identity_id)
                 .order_by(DoorDecisionRecord.id.desc()).limit(args.limit))
        if args.door:
            query = query.where(DoorDecisionRecord.door == args.door)
        if args.outcome:
            query = query.where(DoorDecisionRecord.outcome == args.outcome)
        rows = session.execute(query).all()
    if args.json:
        out.print(json.dumps([{
            "id": d.id, "door": d.door, "camera": d.camera, "outcome": d.outcome, "reason": d.reason,
            "identity": name, "score": d.score, "liveness": d.liveness, "liveness_reason": d.liveness_reason,
            "tailgating": d.tailgating, "decided_at": d.decided_at.isoformat(), "command": d.command,
            "command_error": d.command_error} for d, name in rows]), markup=False)
        return 0
    table = Table(title=f"{len(rows)} door decision(s)", title_justify="left")
    for column in ("id", "decided (UTC)", "door", "outcome", "who", "score", "liveness", "reason", "command"):
        table.add_column(column)
    for d, name in rows:
        command = d.command or "-"
        if d.command_error:
            command += f": {d.command_error}"
        table.add_row(str(d.id), f"{d.decided_at:%Y-%m-%d %H:%M:%S}", d.door, d.outcome, name or "-",
                      f"{d.score:.3f}" if d.score is not None else "-", d.liveness or "-", d.reason, command)
    out.print(table)
    return 0


def _read_factor() -> str:
    """The PIN or card number, typed twice at a terminal, or one line of standard input."""
    if sys.stdin.isatty():
        first = getpass.getpass("PIN or card number: ")
        if getpass.getpass("again: ") != first:
            raise CommandError("the two entries differ; nothing was recorded")
        return first
    line = sys.stdin.readline().strip()
    if not line:
        raise CommandError("--factor reads the PIN or card number from standard input, which was empty")
    return line
