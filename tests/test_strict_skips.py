"""Strict mode: under CI a skip for missing data or a service fails with its reason; GPU tests may still skip."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

INNER_TESTS = '''
import pytest

def test_needs_the_shared_data():
    pytest.skip("real face data not found at /nowhere/shared/data (set FACETRAIL_SHARED_DATA)")

@pytest.mark.gpu
def test_needs_a_gpu():
    pytest.skip("no CUDA provider in this onnxruntime build")

def test_runs():
    assert 1 + 1 == 2
'''
INNER_MODULE_SKIP = '''
import pytest
pytest.skip("Chromium is not installed (Debian package chromium)", allow_module_level=True)

def test_in_a_browser():
    pass
'''


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    for name in ("CI", "FACETRAIL_STRICT_TESTS"):
        monkeypatch.delenv(name, raising=False)
    pytester.makeini("[pytest]\nmarkers =\n    gpu: needs a GPU\n")
    pytester.makepyfile(test_inner=INNER_TESTS, test_browser=INNER_MODULE_SKIP)
    return pytester


def test_on_a_persons_machine_missing_things_skip_with_the_reason_and_are_counted(inner: pytest.Pytester) -> None:
    result = inner.runpytest("-p", "strict_skips", "-ra")
    result.assert_outcomes(passed=1, skipped=3)
    for line in ("*skips: 3*", "*1 x real face data not found at /nowhere/shared/data*",
                 "*1 x Chromium is not installed*"):
        result.stdout.fnmatch_lines([line])


@pytest.mark.parametrize("switch", [("CI", "true"), ("FACETRAIL_STRICT_TESTS", "1")])
def test_under_ci_a_missing_data_set_or_browser_fails_naming_it(inner: pytest.Pytester,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   switch: tuple[str, str]) -> None:
    monkeypatch.setenv(*switch)
    result = inner.runpytest("-p", "strict_skips", "-ra")
    result.assert_outcomes(passed=1, failed=1, skipped=1, errors=1)
    for line in ("*required under CI (strict mode), but missing: real face data not found*",
                 "*required under CI (strict mode), but missing: Chromium is not installed*",
                 "*skips: 1*", "*1 x no CUDA provider*"):
        result.stdout.fnmatch_lines([line])
    assert result.ret != 0
