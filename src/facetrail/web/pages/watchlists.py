"""Watchlists (admins create them and add people) and enrolment (operators upload photos or a folder)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import func, select
from starlette.datastructures import UploadFile as StarletteUpload

from facetrail.api.deps import GalleryDep
from facetrail.api.errors import ApiError
from facetrail.api.heavy import heavy_work
from facetrail.api.routers.uploads import read_upload
from facetrail.api.strings import NAME_MAX, FreeName, FreeText, Name, no_nul, upload_name
from facetrail.gallery.enrol import EnrolOptions, EnrolReport, Outcome, enrol_person
from facetrail.gallery.enrol_faces import FacePick, parse_face_choice
from facetrail.gallery.errors import GalleryError
from facetrail.gallery.gallery import Gallery
from facetrail.gallery.watchlists import add_member, create_watchlist
from facetrail.store.models import Identity, Watchlist, WatchlistMember
from facetrail.web.auth import PageAdmin, PageOperator, PageViewer
from facetrail.web.render import back, page

router = APIRouter()
MAX_FILES = 200


@router.get("/watchlists", response_class=HTMLResponse)
def watchlists(request: Request, store: GalleryDep, who: PageViewer) -> Response:
    """Every watchlist with its purpose, rule and members."""
    with store.db.session() as session:
        lists = list(session.scalars(select(Watchlist).order_by(Watchlist.name)))
        members = {w.id: [name for (name,) in session.execute(
            select(Identity.display_name).join(WatchlistMember, WatchlistMember.identity_id == Identity.id)
            .where(WatchlistMember.watchlist_id == w.id).order_by(Identity.display_name))] for w in lists}
        people = session.execute(select(Identity.id, Identity.display_name).order_by(Identity.display_name)).all()
        shown = [{"name": w.name, "purpose": w.purpose, "threshold": w.threshold, "reviewers": w.reviewers_required,
                  "expires_at": w.expires_at, "members": members[w.id]} for w in lists]
        count = session.scalar(select(func.count()).select_from(Identity)) or 0
    return page(request, "watchlists.html", who, watchlists=shown, people=people, enrolled=count)


@router.post("/watchlists")
def create(store: GalleryDep, who: PageAdmin, name: Annotated[FreeName, Form()] = "",
           purpose: Annotated[FreeText, Form()] = "", reviewers: Annotated[int, Form(ge=1, le=2)] = 1) -> Response:
    """Create a watchlist (audited with its purpose)."""
    try:
        create_watchlist(store, name.strip(), purpose=purpose, actor=who.name, reviewers_required=reviewers)
    except GalleryError as error:
        return back("/watchlists", problem=str(error))
    return back("/watchlists", notice=f"Watchlist {name.strip()!r} created.")


@router.post("/watchlists/{name}/members")
def add(name: Annotated[Name, PathParam()], store: GalleryDep, who: PageAdmin,
        identity_id: Annotated[int, Form(ge=1, le=2**31 - 1)]) -> Response:
    """Put an enrolled person on the watchlist (audited)."""
    try:
        add_member(store, name, str(identity_id), actor=who.name)
    except GalleryError as error:
        return back("/watchlists", problem=str(error))
    return back("/watchlists", notice=f"Added to {name!r}.")


@router.get("/enrol", response_class=HTMLResponse)
def enrol_form(request: Request, who: PageOperator) -> Response:
    """The enrolment form: a name and photos (or a whole folder of one person)."""
    return page(request, "enrol.html", who)


@router.post("/enrol", response_class=HTMLResponse)
async def enrol(request: Request, store: GalleryDep, who: PageOperator) -> Response:
    """Enrol each photo as the form's name; the page lists every file's outcome (nothing is kept of a bad file)."""
    # Read by hand: an empty folder picker sends a part without a file, which a typed File() list refuses.
    form = await request.form(max_files=MAX_FILES + 1)
    name = str(form.get("name") or "").strip()
    confirm = str(form.get("confirm_duplicate") or "") in {"true", "on", "1"}
    files = [f for f in form.getlist("photos") if isinstance(f, StarletteUpload) and f.filename]
    choice = str(form.get("face") or "")[:40]
    try:
        number, pick = parse_face_choice(choice)
    except ValueError as error:
        return page(request, "enrol.html", who, status_code=422, name=name, error=str(error))
    options = EnrolOptions(actor=who.name, allow_duplicate_face=confirm, face=number,
                           take_largest=pick is FacePick.LARGEST, take_centre=pick is FacePick.CENTRE)
    if not name or not files:
        return page(request, "enrol.html", who, status_code=422, name=name,
                    error="Give the person's name and at least one photo.")
    try:
        no_nul(name)
    except ValueError:
        return page(request, "enrol.html", who, status_code=422, name="", error="The name must not contain NUL bytes.")
    if len(name) > NAME_MAX:
        return page(request, "enrol.html", who, status_code=422, name=name[:NAME_MAX],
                    error=f"The name is longer than {NAME_MAX} characters; shorten it.")
    if len(files) > MAX_FILES:
        return page(request, "enrol.html", who, status_code=413, name=name,
                    error=f"At most {MAX_FILES} photos at a time; enrol the rest in another batch.")
    try:
        report = await heavy_work(request).run(_enrol, request, store, name, files, options)
    except ApiError as error:
        return page(request, "enrol.html", who, status_code=error.status, name=name, error=error.message)
    except GalleryError as error:
        return page(request, "enrol.html", who, status_code=422, name=name, error=str(error))
    results = [(f.path.name, str(f.outcome), f.detail, f.warning, [face.describe() for face in f.faces]
                if f.outcome is Outcome.SEVERAL_FACES else []) for f in report.files]
    duplicates = report.count(Outcome.DUPLICATE_FACE)
    problem = (f"{duplicates} photo(s) show a face already enrolled under another identity (named below); if they "
               "really are this person too, tick the box and enrol them again.") if duplicates else None
    return page(request, "enrol.html", who, name=name, results=results, error=problem,
                enrolled=report.count(Outcome.ENROLLED), identity_id=report.identities.get(name))


def _enrol(request: Request, store: Gallery, name: str, files: list[StarletteUpload],
           options: EnrolOptions) -> EnrolReport:
    with tempfile.TemporaryDirectory(prefix="facetrail-enrol-") as folder:
        paths = []
        for number, upload in enumerate(files):  # one folder per file: the same name may come twice
            path = Path(folder) / f"{number:04d}" / upload_name(upload.filename, "photo.jpg")
            path.parent.mkdir()
            path.write_bytes(read_upload(request, upload))
            paths.append(path)
        return enrol_person(store, name, paths, options)
