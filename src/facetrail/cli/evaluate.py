"""`facetrail eval pairs SOURCE`: verification accuracy, ROC and TAR@FAR on labelled pairs.

`facetrail eval ident` (1:N) lives in ``evaluate_ident``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape

from facetrail.cli import evaluate_ident
from facetrail.cli.common import CommandError, add_engine_options, engine_from_args, err, out

if TYPE_CHECKING:
    from facetrail.eval.runner import Evaluation


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `eval` command and its `pairs` and `ident` subcommands."""
    parser = sub.add_parser("eval", help="measure the engine on labelled data",
                            description="Measure the face engine on labelled data.")
    what = parser.add_subparsers(dest="eval_command", metavar="WHAT", required=True)
    pairs = what.add_parser(
        "pairs", help="verification accuracy, AUC and TAR@FAR on same/different image pairs",
        description="Embed every image of a pair list once (main face) and report 10-fold accuracy, "
                    "the best threshold, AUC and TAR@FAR; writes roc.png, summary.json and scores.csv. "
                    "SOURCE is an LFW pairs file (images under images/ beside it), a CSV with the "
                    "columns file_x,file_y,same, or a folder with one subfolder of photos per person.")
    pairs.add_argument("source", type=Path, metavar="SOURCE")
    pairs.add_argument("--images-root", type=Path, metavar="DIR",
                       help="where the images of an LFW or CSV pair list are "
                            "(default: images/ beside an LFW file, the CSV's folder)")
    pairs.add_argument("--out", type=Path, metavar="DIR",
                       help="report folder (default: ./eval-out/<source name>-<recogniser>)")
    pairs.add_argument("--far", type=_rate, default=1e-3, metavar="RATE",
                       help="false accept rate at which to report the TAR (default 0.001; TAR@FAR=0.01 "
                            "is always reported too, each only with at least 10/FAR different pairs)")
    pairs.add_argument("--threshold", type=float, metavar="T",
                       help="also report accuracy, TAR and FAR at this fixed threshold "
                            "(to check a stored calibration)")
    pairs.add_argument("--impostors-per-person", type=_count, metavar="N",
                       help="folder SOURCE: N different-person pairs per person "
                            "(default: as many different-person pairs as same-person pairs in all)")
    pairs.add_argument("--seed", type=int, default=0, help="folder SOURCE: sampling seed (default 0)")
    add_engine_options(pairs)
    pairs.set_defaults(run=run)
    evaluate_ident.register(what)


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {text}")
    return value


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return int(text)


def run(args: argparse.Namespace) -> int:
    """Evaluate, write the report, print a short summary; exit 1 on unusable input."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from facetrail.eval.pairs import PairsError, read_pairs
    from facetrail.eval.report import write_report
    from facetrail.eval.runner import evaluate

    try:
        pairs = read_pairs(args.source, images_root=args.images_root,
                           impostors_per_person=args.impostors_per_person, seed=args.seed)
    except PairsError as error:
        raise CommandError(str(error)) from None
    if pairs.genuine == 0 or pairs.impostors == 0:
        raise CommandError(f"{args.source}: needs both same-person and different-person pairs "
                           f"(has {pairs.genuine} same, {pairs.impostors} different)")
    images = pairs.images()
    if not any(path.is_file() for path in images):
        hint = " (wrong --images-root?)" if pairs.kind != "folder" else ""
        raise CommandError(f"none of the {len(images)} images of {args.source} exists, "
                           f"e.g. {images[0]}{hint}")
    engine = engine_from_args(args)
    thresholds: dict[str, float] = {}
    calibration = engine.recogniser.calibration
    if calibration is not None:
        thresholds[f"calibrated ({calibration.dataset})"] = calibration.threshold
    if args.threshold is not None:
        thresholds["given"] = args.threshold
    out_dir = args.out or Path("eval-out") / f"{pairs.name}-{args.recogniser}"
    columns = (TextColumn("embedding"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, disable=not err.is_terminal) as progress:
        task = progress.add_task("embedding", total=len(images))
        evaluation = evaluate(engine, pairs, far_levels=(args.far, 1e-2), thresholds=thresholds,
                              progress=lambda _: progress.advance(task))
    write_report(evaluation, out_dir)
    print_summary(evaluation, out_dir)
    return 0


def print_summary(evaluation: Evaluation, out_dir: Path) -> None:
    """A few lines for people; summary.json has everything."""
    m, pairs = evaluation.metrics, evaluation.pairs
    out.print(f"[bold]{escape(pairs.name)}[/bold] ({pairs.kind}): {m.genuine} same + {m.impostors} "
              f"different pairs, "
              f"{evaluation.images} images, {evaluation.recogniser} ({evaluation.model_id}), "
              f"embedded in {evaluation.embed_seconds:.0f} s")
    if m.kfold is not None:
        out.print(f"{m.folds}-fold accuracy [bold]{m.kfold.mean:.2%} ± {m.kfold.std:.2%}[/bold] "
                  f"(mean threshold {m.kfold.mean_threshold:.4f})")
    else:
        out.print(f"k-fold accuracy: n/a ({m.kfold_note})")
    out.print(f"best threshold {m.best.threshold:.4f}: accuracy {m.best.accuracy:.2%} "
              f"(TAR {m.best.tar:.4f}, FAR {m.best.far:.4f}) over all pairs")
    out.print(f"AUC {m.auc:.5f}")
    for tar in m.tar:
        value = (f"{tar.tar:.4f} (threshold {tar.threshold:.4f})" if tar.tar is not None
                 else f"n/a ({escape(tar.reason or '')})")
        out.print(f"TAR@FAR={tar.far:g}: {value}")
    for name, decisions in m.fixed.items():
        out.print(f"at {name} threshold {decisions.threshold:.4f}: accuracy {decisions.accuracy:.2%} "
                  f"(TAR {decisions.tar:.4f}, FAR {decisions.far:.4f})")
    if evaluation.failures:
        out.print(f"{len(evaluation.failures)} image(s) unusable, {m.failed_pairs} pair(s) counted as "
                  "wrong (see summary.json)", style="yellow")
    if m.usable is not None and m.usable.kfold is not None:
        out.print(f"without those pairs ({m.usable.pairs}): {m.usable.folds}-fold accuracy "
                  f"{m.usable.kfold.mean:.2%} ± {m.usable.kfold.std:.2%}, AUC {m.usable.auc:.5f}, "
                  f"best threshold {m.usable.best.threshold:.4f}")
    out.print(f"report: {escape(str(out_dir))}/summary.json, roc.png, scores.csv", style="dim")
