"""`facetrail config validate FILE` and `facetrail config schema`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from facetrail.cli.common import out
from facetrail.config.loader import load_config
from facetrail.config.schema import FacetrailConfig


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the subcommand group."""
    parser = sub.add_parser("config", help="check a configuration file, or print its JSON Schema")
    actions = parser.add_subparsers(dest="config_action", metavar="ACTION", required=True)
    validate = actions.add_parser("validate", help="check a configuration file; errors name the line and field")
    validate.add_argument("file", type=Path)
    validate.set_defaults(run=run_validate)
    schema = actions.add_parser("schema", help="print the JSON Schema of the configuration file")
    schema.set_defaults(run=run_schema)


def run_validate(args: argparse.Namespace) -> int:
    """Print OK with the cameras, or raise ConfigError (printed by main, exit 1)."""
    config = load_config(args.file)
    names = ", ".join(config.cameras)
    out.print(f"{args.file}: OK ({len(config.cameras)} camera(s): {names})", markup=False)
    return 0


def run_schema(_args: argparse.Namespace) -> int:
    """Write the JSON Schema to standard output."""
    sys.stdout.write(json.dumps(FacetrailConfig.model_json_schema(), indent=2) + "\n")
    return 0
