"""Shared pytest setup: quiet TensorFlow, find ../shared, reset global state between tests."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED_DIR = REPO_ROOT.parent / "shared"
SHARED_DATA = SHARED_DIR / "data"
FIXTURES = REPO_ROOT / "tests" / "fixtures"


@pytest.fixture
def shared_data():
    """Path to ../shared/data, or None on a fresh clone (tests then write their own files)."""
    return SHARED_DATA if SHARED_DATA.is_dir() else None
