"""`facetrail audit verify|list`: the tamper-evident audit log."""

from __future__ import annotations

import argparse

from rich.markup import escape
from sqlalchemy import select

from facetrail.cli.common import add_gallery_options, opened_gallery, out
from facetrail.store.audit import verify_chain
from facetrail.store.models import AuditEntry


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the subcommand group."""
    parser = sub.add_parser("audit", help="verify or read the audit log")
    actions = parser.add_subparsers(dest="audit_action", metavar="ACTION", required=True)
    verify = actions.add_parser("verify", help="check the keyed hash chain and the last signed checkpoint; exit 1 "
                                "if entries were altered, inserted or removed, or the log truncated")
    add_gallery_options(verify)
    verify.set_defaults(run=run_verify)
    listing = actions.add_parser("list", help="print the latest entries")
    listing.add_argument("--last", type=int, default=20, metavar="N")
    add_gallery_options(listing)
    listing.set_defaults(run=run_list)


def run_verify(args: argparse.Namespace) -> int:
    """Verify the whole chain with the audit key, and its head against the last signed checkpoint."""
    with opened_gallery(args) as gallery, gallery.db.session() as session:
        check = verify_chain(session)
    if check.ok:
        note = f" ({check.note})" if check.note else ""
        out.print(f"audit log intact: {check.checked} entries verified{note}", markup=False)
        return 0
    for problem in check.problems:
        out.print(f"[red]audit log TAMPERED[/red]: {escape(problem)}")
    if check.cannot_check:
        out.print(f"[red]audit log CANNOT BE CHECKED[/red]: {escape(check.cannot_check)}")
    return 1


def run_list(args: argparse.Namespace) -> int:
    """Print the newest entries, oldest first."""
    with opened_gallery(args) as gallery, gallery.db.session() as session:
        rows = list(session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(args.last)))
    for row in reversed(rows):
        purpose = f" purpose={row.purpose!r}" if row.purpose else ""
        count = f" results={row.result_count}" if row.result_count is not None else ""
        out.print(f"{row.id:>6} {row.at:%Y-%m-%d %H:%M:%S} {row.actor} {row.action} {row.target}{purpose}{count}",
                  markup=False)
    return 0
