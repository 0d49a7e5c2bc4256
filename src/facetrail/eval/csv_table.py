"""Reading an evaluation CSV (pair lists, 1:N sets): a header with named columns, one value per data row."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
Row = dict[str | None, str | None]


def read_rows(path: Path, columns: Sequence[str], parse: Callable[[int, Row], T],
              error: type[ValueError], what: str) -> list[T]:
    """``parse(line number, row)`` of every data row of the CSV ``path``, whose header must name ``columns``.

    Anything unreadable raises ``error`` with a one-line message (``what``: what the file should hold).
    """
    try:
        with path.open(newline="", encoding="utf-8") as stream:
            reader = csv.DictReader(stream)
            header = [c.strip() for c in reader.fieldnames or []]
            missing = set(columns) - set(header)
            if missing:
                raise error(f"{path} line 1: the header needs the columns {','.join(columns)} "
                            f"(missing {','.join(sorted(missing))})")
            reader.fieldnames = header
            return [parse(reader.line_num, row) for row in reader]
    except UnicodeDecodeError:
        raise error(f"{path}: not a text file (expected {what})") from None
    except csv.Error as exc:
        raise error(f"{path}: not valid CSV ({exc})") from None
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror or exc})") from None
