"""`facetrail demo`: the face engine on the sample photos the model package ships."""

from __future__ import annotations

import argparse

import numpy as np

from facetrail.cli.common import add_engine_options, analyze_file, engine_from_args, out
from facetrail.cli.faces import print_faces
from facetrail.vision.samples import sample_image


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the subcommand."""
    parser = sub.add_parser("demo", help="run the engine on the shipped sample photos",
                            description="Detect the faces in the sample photos that ship with "
                                        "the model package, then find the player of yaoming.jpg "
                                        "among the team in players.jpg.")
    add_engine_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print the faces of each sample and where the single player stands in the team photo."""
    engine = engine_from_args(args)
    spec = engine.recogniser
    out.print(f"recogniser: {spec.model_id} ({spec.embedding_size}-d); licence: {spec.licence}")
    results = {}
    for name in ("players.jpg", "yaoming.jpg", "gdp.jpg"):
        path = sample_image(name)
        results[name] = analyze_file(engine, path)
        print_faces(path, results[name])
    team, single = results["players.jpg"], results["yaoming.jpg"]
    scores = team.embeddings.similarity(single.embeddings)[:, 0]
    best = int(np.argmax(scores))
    runner_up = float(np.sort(scores)[-2]) if len(scores) > 1 else float("nan")
    x1, y1, x2, y2 = team.detections.xyxy[best]
    verdict = "same person" if scores[best] >= engine.threshold else "no match"
    out.print(f"\nyaoming.jpg vs the {len(team)} faces of players.jpg: best is face #{best} at "
              f"({x1:.0f},{y1:.0f})-({x2:.0f},{y2:.0f}), similarity {scores[best]:.3f} "
              f"({verdict}; threshold {engine.threshold:.3f}); next best {runner_up:.3f}")
    return 0
