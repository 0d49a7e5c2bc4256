"""`facetrail compare A B`: are these two photos the same person?"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from facetrail.cli.common import (
    add_engine_options,
    analyze_file,
    engine_from_args,
    out,
    require_face,
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the subcommand."""
    parser = sub.add_parser(
        "compare", help="similarity of the main faces of two images, and the same-person decision",
        description="Compare the main (largest) face of two images. The decision uses the "
                    "recogniser's threshold calibrated on LFW View 1.")
    parser.add_argument("first", type=Path, metavar="A")
    parser.add_argument("second", type=Path, metavar="B")
    parser.add_argument("--json", action="store_true", help="print JSON for machines")
    add_engine_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print the similarity and the decision; exit 0 for either decision, 1 on bad input."""
    engine = engine_from_args(args)
    faces_a = analyze_file(engine, args.first)
    index_a = require_face(args.first, faces_a)
    faces_b = analyze_file(engine, args.second)
    index_b = require_face(args.second, faces_b)
    similarity = float(faces_a.embeddings.similarity(faces_b.embeddings)[index_a, index_b])
    threshold = engine.threshold
    same = similarity >= threshold
    calibration = engine.recogniser.calibration
    if args.json:
        out.print(json.dumps({"similarity": round(similarity, 4), "threshold": threshold,
                              "same_person": same, "model": engine.recogniser.model_id}),
                  markup=False)
        return 0
    verdict = "[green]same person[/green]" if same else "[yellow]different people[/yellow]"
    source = f", calibrated on {calibration.dataset}" if calibration else ""
    out.print(f"similarity {similarity:.3f} (threshold {threshold:.3f}{source}): {verdict}")
    for path, faces in ((args.first, faces_a), (args.second, faces_b)):
        if len(faces) > 1:
            out.print(f"note: {path} has {len(faces)} faces; compared the largest", style="dim")
    return 0
