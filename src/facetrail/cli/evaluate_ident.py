"""`facetrail eval ident SOURCE`: 1:N identification (rank-1, CMC, FNIR at FPIR, DET) in the NIST FRVT manner."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape

from facetrail.cli.common import CommandError, add_engine_options, engine_from_args, err, out

if TYPE_CHECKING:
    from facetrail.eval.ident import IdentEvaluation
    from facetrail.eval.ident_groups import GroupReport

GROUPS_HELP = ("CSV with the columns person,group: a label per person that YOU supply (any grouping you need to "
               "check, e.g. by camera site or by a demographic attribute the people declared); facetrail infers no "
               "group of any kind from faces or images and stores none. Reports FMR, FNMR, FPIR and FNIR per group "
               "at the operating threshold, FNIR at fixed FPIRs per group, and the highest-to-lowest ratio of each")


def register(what: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `ident` subcommand under `eval`."""
    ident = what.add_parser(
        "ident", help="1:N identification: rank-1, CMC, FNIR at FPIR, DET plot (NIST FRVT style)",
        description="Enrol a gallery and search it with probes, as NIST FRVT 1:N does. SOURCE is a folder with "
                    "one subfolder of photos per person (the first --enrol photos of each person are enrolled, the "
                    "rest are mated probes; --non-mated-fraction of the people, drawn with --seed, are kept out "
                    "of the gallery and all their photos are non-mated probes; people with no photo left after "
                    "enrolment stay enrolled as people nobody searches for), or a CSV with the columns "
                    "path,person,role (role enrol or probe; a probe of a person with no enrol row is non-mated). "
                    "An image with no face is a failure: a mated probe with no face is a miss, an enrolled person "
                    "with no face in any enrolment image has no template; both are counted and listed. Writes "
                    "summary.json, det.png (DET and CMC) and probes.csv.")
    ident.add_argument("source", type=Path, metavar="SOURCE")
    ident.add_argument("--enrol", type=_positive, metavar="N",
                       help="folder SOURCE: enrolment photos per person (default 1)")
    ident.add_argument("--non-mated-fraction", type=_fraction, metavar="F",
                       help="folder SOURCE: share of the people held out of the gallery as non-mated probes, "
                            "0 to below 1 (default 0.2; at least one person when above 0)")
    ident.add_argument("--seed", type=int, default=0, help="folder SOURCE: which people are held out (default 0)")
    ident.add_argument("--images-root", type=Path, metavar="DIR",
                       help="CSV SOURCE: where relative paths start (default: the CSV's folder)")
    ident.add_argument("--threshold", type=float, metavar="T",
                       help="operating threshold (default: the recogniser's calibrated threshold)")
    ident.add_argument("--max-rank", type=_positive, default=10, metavar="K",
                       help="CMC up to rank K (default 10, at most the gallery size)")
    ident.add_argument("--groups", type=Path, metavar="FILE", help=GROUPS_HELP)
    ident.add_argument("--out", type=Path, metavar="DIR",
                       help="report folder (default: ./eval-out/<source name>-ident-<recogniser>)")
    ident.add_argument("--json", type=Path, metavar="PATH", help="also write every figure (summary.json) here")
    add_engine_options(ident)
    ident.set_defaults(run=run)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return int(text)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {text}")
    return value


def run(args: argparse.Namespace) -> int:
    """Evaluate, write the report, print a summary; exit 1 on unusable input."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from facetrail.eval.ident import evaluate_ident
    from facetrail.eval.ident_groups import GroupsError, read_groups
    from facetrail.eval.ident_report import write_ident_report
    from facetrail.eval.ident_sets import IdentSetError, read_ident

    try:
        ident_set = read_ident(args.source, enrol=args.enrol, non_mated_fraction=args.non_mated_fraction,
                               seed=args.seed, images_root=args.images_root)
        groups = read_groups(args.groups) if args.groups is not None else None
    except (IdentSetError, GroupsError) as error:
        raise CommandError(str(error)) from None
    images = ident_set.images()
    if not any(path.is_file() for path in images):
        hint = " (wrong --images-root?)" if ident_set.kind == "csv" else ""
        raise CommandError(f"none of the {len(images)} images of {args.source} exists, e.g. {images[0]}{hint}")
    engine = engine_from_args(args)
    calibration = engine.recogniser.calibration
    if args.threshold is not None:
        threshold, name = args.threshold, "given threshold"
    elif calibration is not None:
        threshold, name = calibration.threshold, f"calibrated threshold ({calibration.dataset})"
    else:
        raise CommandError(f"{engine.recogniser.name} has no calibrated threshold; pass --threshold")
    out_dir = args.out or Path("eval-out") / f"{ident_set.name}-ident-{args.recogniser}"
    columns = (TextColumn("embedding"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, disable=not err.is_terminal) as progress:
        task = progress.add_task("embedding", total=len(images))
        try:
            evaluation = evaluate_ident(engine, ident_set, threshold=threshold, threshold_name=name,
                                        max_rank=args.max_rank, groups=groups,
                                        progress=lambda _: progress.advance(task))
        except IdentSetError as error:  # no enrolment image has a face
            raise CommandError(f"{args.source}: {error}") from None
    write_ident_report(evaluation, out_dir, args.json)
    print_summary(evaluation, out_dir, args.json)
    return 0


def print_summary(evaluation: IdentEvaluation, out_dir: Path, json_path: Path | None) -> None:
    """A few lines for people; summary.json has everything."""
    s, m = evaluation.ident_set, evaluation.metrics
    out.print(f"[bold]{escape(s.name)}[/bold] ({s.kind}): {len(s.gallery)} people enrolled "
              f"({m.gallery_size} with a template), {m.mated} mated + {m.non_mated} non-mated probes, "
              f"{evaluation.images} images, {evaluation.recogniser} ({evaluation.model_id}), "
              f"embedded in {evaluation.embed_seconds:.0f} s")
    out.print(f"rank-1 [bold]{m.rank1:.2%}[/bold]; CMC " +
              ", ".join(f"r{r + 1} {v:.2%}" for r, v in enumerate(m.cmc)))
    op = m.operating
    fpir = f"{op.fpir:.4f}" if op.fpir is not None else "n/a (no non-mated probes)"
    fnir = f"{op.fnir:.4f}" if op.fnir is not None else "n/a"
    out.print(f"at the {m.operating_name} {op.threshold:.4f}: FNIR {fnir}, FPIR {fpir}")
    for point in m.fnir_at_fpir:
        value = (f"{point.fnir:.4f} (threshold {point.threshold:.4f})" if point.fnir is not None
                 else f"n/a ({escape(point.reason or '')})")
        out.print(f"FNIR@FPIR={point.fpir:g}: {value}")
    _print_failures(evaluation)
    if evaluation.groups is not None:
        _print_groups(evaluation.groups)
    extra = f" and {escape(str(json_path))}" if json_path is not None else ""
    out.print(f"report: {escape(str(out_dir))}/summary.json, det.png, probes.csv{extra}", style="dim")


def _print_failures(evaluation: IdentEvaluation) -> None:
    m, t = evaluation.metrics, evaluation.templates
    if evaluation.failures:
        out.print(f"{len(evaluation.failures)} image(s) with no usable face: {m.failed_mated} mated probe(s) "
                  f"counted as misses, {m.failed_non_mated} non-mated probe(s) without a candidate",
                  style="yellow")
        for failure in evaluation.failures:
            out.print(f"  {escape(str(failure.path))}: {escape(failure.reason)}", style="yellow")
    if t.without_template:
        out.print(f"{len(t.without_template)} enrolled person(s) without a template (no face in any enrolment "
                  f"image), their {m.mated_without_template} mated probe(s) counted as misses: "
                  + ", ".join(escape(p) for p in t.without_template), style="yellow")


def _print_groups(report: GroupReport) -> None:
    out.print(f"per group at threshold {report.threshold:.4f} (labels from {escape(str(report.source))}; "
              "facetrail infers no group):")
    out.print(f"  {'group':<20} {'people':>6} {'mated':>6} {'non-m.':>6} {'FNMR':>8} {'FMR':>8} {'FNIR':>8} "
              f"{'FPIR':>8}")
    for g in report.groups:
        cells = " ".join(f"{_rate(v):>8}" for v in (g.fnmr, g.fmr, g.fnir, g.fpir))
        out.print(f"  {escape(g.group):<20} {g.persons:>6} {g.mated:>6} {g.non_mated:>6} {cells}")
    for spread in report.spreads:
        if spread.ratio is not None and spread.highest and spread.lowest:
            out.print(f"  {spread.rate.upper()} highest/lowest: {spread.ratio:.2f} "
                      f"({escape(spread.highest[0])} / {escape(spread.lowest[0])})")
        else:
            out.print(f"  {spread.rate.upper()} highest/lowest: n/a ({escape(spread.reason or '')})")
    if report.ungrouped:
        out.print(f"  {len(report.ungrouped)} person(s) have no group in the file and are in no group row",
                  style="dim")
    if report.unknown:
        out.print(f"  {len(report.unknown)} person(s) of the file are not in the evaluation", style="dim")


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
