"""`facetrail serve` (the dashboard and the REST API) and `facetrail keys create|list|revoke`."""

from __future__ import annotations

import argparse
import logging
import threading
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from facetrail.cli.common import actor_of, add_gallery_options, err, opened_gallery, out
from facetrail.store.keys import KEY_ROLES, create_key, revoke_key
from facetrail.store.models import ApiKey

if TYPE_CHECKING:
    from facetrail.pipeline.runner import Pipeline

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `serve` and the `keys` group."""
    serve = sub.add_parser("serve", help="serve the dashboard (/) and the REST API (/api/v1, docs at /api/v1/docs)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--max-upload-mb", type=float, default=10.0, help="largest image upload accepted")
    serve.add_argument("--max-body-mb", type=float, default=None,
                       help="largest request body accepted, uploads included (default: the upload limit + 1 MB); "
                            "a dashboard batch enrolment sends all its photos in one body")
    serve.add_argument("--search-workers", type=int, default=2,
                       help="searches and enrolments analysed at once (default 2)")
    serve.add_argument("--search-queue", type=int, default=8,
                       help="more that wait for a worker; beyond that they get 503 with Retry-After (default 8)")
    serve.add_argument("--forwarded-allow-ips", default=None, metavar="IPS",
                       help="comma-separated addresses of reverse proxies whose X-Forwarded-For/-Proto are trusted "
                            "(default: none; headers from anyone else are ignored)")
    serve.add_argument("--config", type=Path, default=None,
                       help="also run the pipeline of this configuration in this process (its data_dir and "
                            "database replace --data and --db); without it, run `facetrail run CONFIG` beside")
    add_gallery_options(serve)
    serve.set_defaults(run=run_serve)
    keys = sub.add_parser("keys", help="API keys: create (shown once), list, revoke")
    actions = keys.add_subparsers(dest="keys_action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="make a key; its secret is printed once")
    create.add_argument("name", help="who or what uses the key")
    create.add_argument("--role", choices=KEY_ROLES, required=True,
                        help="viewer < operator < admin; door: a keypad or door controller (second factors, states)")
    add_gallery_options(create)
    create.set_defaults(run=run_create)
    listing = actions.add_parser("list", help="list keys (never their secrets)")
    add_gallery_options(listing)
    listing.set_defaults(run=run_list)
    revoke = actions.add_parser("revoke", help="revoke a key; it stops working at once")
    revoke.add_argument("name")
    add_gallery_options(revoke)
    revoke.set_defaults(run=run_revoke)


def run_serve(args: argparse.Namespace) -> int:
    """Run uvicorn on the API and the dashboard until interrupted; with --config, the pipeline too."""
    import uvicorn

    from facetrail.api.app import ApiSettings, create_app, warm_up
    from facetrail.heap import keep_large_buffers_out_of_the_heap
    from facetrail.web.app import install_dashboard

    keep_large_buffers_out_of_the_heap()  # before the models and photos are allocated

    upload_limit = int(args.max_upload_mb * 1_000_000)
    if args.search_workers < 1 or args.search_queue < 0:
        err.print("error: --search-workers must be 1 or more and --search-queue 0 or more", markup=False)
        return 2
    pipeline = worker = None
    stop = threading.Event()
    if args.config is not None:
        from facetrail.config.loader import load_config
        from facetrail.pipeline.runner import Pipeline

        config = load_config(args.config)
        pipeline = Pipeline(config, actor=actor_of(args))
        settings = ApiSettings(config.data_dir, config.database.url, config.recogniser, upload_limit, config=config)
        worker = threading.Thread(target=_run_pipeline, args=(pipeline, stop), name="pipeline", daemon=True)
    else:
        settings = ApiSettings(args.data, args.db, args.recogniser, upload_limit)
    settings = replace(settings, search_workers=args.search_workers, search_queue=args.search_queue,
                       max_body_bytes=None if args.max_body_mb is None else int(args.max_body_mb * 1_000_000))
    app = create_app(settings, gallery=pipeline.gallery if pipeline else None)
    install_dashboard(app)
    out.print("loading the models ...")
    warm_up(app)
    if worker is not None:
        worker.start()
    out.print(f"facetrail dashboard on http://{args.host}:{args.port}/ (API: /api/v1, docs: /api/v1/docs)"
              + (f"; watching {len(pipeline.cameras)} camera(s)" if pipeline else ""))
    try:
        # uvicorn would trust X-Forwarded-* from loopback by default; only the listed proxies' headers count.
        proxies = args.forwarded_allow_ips
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", proxy_headers=bool(proxies),
                    forwarded_allow_ips=proxies or None)
    finally:
        stop.set()
        if worker is not None:
            worker.join(timeout=30)
    return 0


def _run_pipeline(pipeline: Pipeline, stop: threading.Event) -> None:
    try:
        pipeline.run(stop, until_done=False)
    except Exception:  # the server keeps serving what is stored; the cameras page shows the pipeline is gone
        log.exception("the pipeline stopped")


def run_create(args: argparse.Namespace) -> int:
    """Make a key and print it once."""
    with opened_gallery(args) as gallery, gallery.db.session() as session:
        key = create_key(session, args.name, args.role, actor=actor_of(args))
    out.print(f"key {args.name!r} ({args.role}); keep it now, it is not shown again:\n{key}", markup=False)
    return 0


def run_list(args: argparse.Namespace) -> int:
    """Print the keys."""
    with opened_gallery(args) as gallery, gallery.db.session() as session:
        for row in session.scalars(select(ApiKey).order_by(ApiKey.name)):
            state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "active"
            used = f", last used {row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else ""
            out.print(f"{row.name}: {row.role}, {state}{used}", markup=False)
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    """Revoke one key."""
    with opened_gallery(args) as gallery, gallery.db.session() as session:
        revoke_key(session, args.name, actor=actor_of(args))
    out.print(f"key {args.name!r} revoked")
    return 0
