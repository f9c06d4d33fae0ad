"""Shared fixtures. Prefect and the decoded-sample cache get temporary homes
before anything imports them; no test touches ~/.prefect or ~/.cache."""

from __future__ import annotations

import os
import tempfile

_session_home = tempfile.mkdtemp(prefix="casflow-tests-")
os.environ["PREFECT_HOME"] = os.path.join(_session_home, "prefect")
os.environ["CASFLOW_CACHE_DIR"] = os.path.join(_session_home, "cache")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_UI_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "casflow")
for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "PREFECT_API_URL"):
    os.environ.pop(key, None)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CIFAR10 = REPO.parent / "shared" / "datasets" / "cifar10"

# The demo's recipe, smaller still: seconds per model on two CPU cores.
TINY_CLASSIFIER = {
    "recipe": "fast",
    "options": {"widths": [32, 64, 64], "epochs": 6, "batch_size": 64, "flip": False, "translate": 1},
    "device": "cpu",
}


def write_config(directory: Path, models: list[dict], *, store_url: str | None = None, name: str = "config.yaml",
                 **sections) -> Path:
    """A YAML config on digits with the tiny classifier; keyword sections replace the defaults."""
    config = {
        "store": {"url": store_url or str(directory / "store")},
        "dataset": {"kind": "digits"},
        "classifier": TINY_CLASSIFIER,
        "seed": 0,
        "models": models,
    } | sections
    path = directory / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture
def tiny_config(tmp_path):
    def make(models: list[dict], name: str = "config.yaml", **sections) -> Path:
        return write_config(tmp_path, models, name=name, **sections)

    return make


@pytest.fixture(scope="session")
def cifar10_dir() -> Path:
    """The real CIFAR-10 copy beside the project; tests that need it skip where it is absent."""
    if not (CIFAR10 / "train.parquet").exists():
        pytest.skip("../shared/datasets/cifar10 is not here (as in a user's clone)")
    return CIFAR10
