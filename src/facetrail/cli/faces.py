"""`facetrail faces IMAGE...`: what the engine finds in each image."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from facetrail.cli.common import (
    add_engine_options,
    analyze_file,
    engine_from_args,
    out,
    report_image_error,
)
from facetrail.vision.engine import ImageFaces
from facetrail.vision.errors import ImageError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the subcommand."""
    parser = sub.add_parser("faces", help="detect faces and print box, landmarks, score, quality",
                            description="Detect faces in images and print, per face, the box, "
                                        "the 5 landmarks, the detector score and the quality.")
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    parser.add_argument("--json", action="store_true", help="print one JSON document for machines")
    add_engine_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Analyse every image; exit 1 when any image failed or had no face."""
    engine = engine_from_args(args)
    documents: list[dict[str, Any]] = []
    failed = 0
    for path in args.images:
        try:
            faces = analyze_file(engine, path)
        except ImageError as error:
            report_image_error(error)
            documents.append({"image": str(path), "error": error.problem, "faces": []})
            failed += 1
            continue
        if len(faces) == 0:
            report_image_error(ImageError(str(path), "no face found"))
            failed += 1
        documents.append(face_document(path, faces))
        if not args.json:
            print_faces(path, faces)
    if args.json:
        out.print(json.dumps({"model": engine.recogniser.model_id, "images": documents}, indent=2),
                  markup=False)
    return 1 if failed else 0


def face_document(path: Path, faces: ImageFaces) -> dict[str, Any]:
    """A JSON-ready description of the faces of one image."""
    rows = []
    for i in range(len(faces)):
        q = faces.qualities[i]
        rows.append({
            "box": [round(float(v), 1) for v in faces.detections.xyxy[i]],
            "landmarks": [[round(float(x), 1), round(float(y), 1)]
                          for x, y in faces.detections.landmarks[i]],
            "score": round(float(faces.detections.scores[i]), 4),
            "quality": {"score": q.score, "face_px": q.face_px, "sharpness": q.sharpness,
                        "yaw": q.yaw, "pitch": q.pitch, "roll": q.roll, "parts": q.parts},
        })
    return {"image": str(path), "enhanced": faces.enhanced,
            "rotation": faces.detections.rotation, "faces": rows}


def print_faces(path: Path, faces: ImageFaces) -> None:
    """The faces of one image as plain lines, for people."""
    notes = []
    if faces.enhanced:
        notes.append("dark: low-light enhanced")
    if faces.detections.rotation:
        notes.append(f"found after turning the image {faces.detections.rotation}° clockwise")
    if faces.dropped_misaligned:
        notes.append(f"{faces.dropped_misaligned} unreliable face(s) left out")
    suffix = f" ({'; '.join(notes)})" if notes else ""
    out.print(f"[bold]{path}[/bold]: {len(faces)} face(s){suffix}")
    for i in range(len(faces)):
        q = faces.qualities[i]
        box = ",".join(f"{v:.0f}" for v in faces.detections.xyxy[i])
        marks = " ".join(f"{x:.0f},{y:.0f}" for x, y in faces.detections.landmarks[i])
        out.print(f"  #{i:<2} box {box}  score {faces.detections.scores[i]:.2f}  "
                  f"quality {q.score:.2f} (size {q.face_px:.0f}px, sharpness {q.sharpness:.0f}, "
                  f"yaw/pitch/roll {q.yaw:.0f}/{q.pitch:.0f}/{q.roll:.0f})  landmarks {marks}")
