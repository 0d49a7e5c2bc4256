"""Skips that would hide a missing data set or service fail instead under CI (``CI=true``) or ``make test STRICT=1``.

A person's machine may lack ``../shared/data``, PostgreSQL, Mosquitto or Chromium; the tests that need them
skip there, with the reason. In CI the same skip would let a run pass green without them, so in strict mode
every skip fails with its reason, except tests marked ``gpu`` (no GPU is promised anywhere). Every run ends
with the count of skips and their reasons.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator

import pytest
from _pytest.reports import CollectReport, TestReport
from _pytest.terminal import TerminalReporter

STRICT_VALUES = {"1", "true", "yes"}


def strict_mode() -> bool:
    """True under CI (``CI=true``) or when asked for (``FACETRAIL_STRICT_TESTS=1``, as ``make test STRICT=1`` sets)."""
    return any(os.environ.get(name, "").strip().lower() in STRICT_VALUES for name in ("CI", "FACETRAIL_STRICT_TESTS"))


def skip_reason(report: TestReport | CollectReport) -> str:
    """The reason pytest recorded for a skip."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def may_skip(item: pytest.Item) -> bool:
    """Only GPU tests may skip in strict mode."""
    return item.get_closest_marker("gpu") is not None


def fail_instead(report: TestReport | CollectReport) -> None:
    """Turn a skip report into a failure that names what was missing."""
    reason = skip_reason(report)
    report.outcome = "failed"
    report.longrepr = (f"required under CI (strict mode), but missing: {reason}\n"
                       "Only tests marked 'gpu' may skip here; on a person's machine, run without CI=true or STRICT=1 "
                       "to skip instead.")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: TestReport = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and strict_mode() and not may_skip(item):
        fail_instead(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    outcome = yield
    report: CollectReport = outcome.get_result()
    if report.skipped and strict_mode():  # a whole module skipped (Chromium or a package missing)
        fail_instead(report)


def pytest_configure(config: pytest.Config) -> None:
    if strict_mode():  # a module that could not be collected fails; the others still run and report theirs
        config.option.continue_on_collection_errors = True


def pytest_report_header(config: pytest.Config) -> str:
    if strict_mode():
        return "strict mode (CI=true or STRICT=1): a missing data set or service fails its tests; only GPU tests skip"
    return "skips allowed: tests whose data set or service is missing skip with the reason (CI=true makes them fail)"


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
    skipped = [report for report in terminalreporter.stats.get("skipped", []) if not hasattr(report, "wasxfail")]
    reasons = Counter(skip_reason(report) for report in skipped)
    terminalreporter.section(f"skips: {len(skipped)}", sep="-")
    for reason, count in reasons.most_common():
        terminalreporter.write_line(f"{count:4d} x {reason}")
    if not skipped:
        terminalreporter.write_line("none")
