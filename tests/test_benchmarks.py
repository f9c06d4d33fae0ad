"""The benchmark script's plumbing, on the CPU: `--smoke` runs it end to end
on a tiny CIFAR-10 subset; without CUDA and without `--smoke` it refuses."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "cifar10_gpu.py"


def run_script(*args: str, env_dir: Path, timeout: int) -> subprocess.CompletedProcess:
    env = os.environ | {"CASFLOW_CACHE_DIR": str(env_dir / "cache")}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is here: the script would run for real")
def test_without_cuda_it_says_so_and_exits_2(tmp_path):
    done = run_script("--out", str(tmp_path), env_dir=tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "CUDA is not available" in done.stdout and "--smoke" in done.stdout
    assert list(tmp_path.glob("*.md")) == []


@pytest.mark.slow
def test_smoke_run_writes_its_table(cifar10_dir, tmp_path):
    out = tmp_path / "results"
    done = run_script("--smoke", "--data", str(cifar10_dir), "--out", str(out), env_dir=tmp_path, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| trainer | runs | top-1 % mean" in done.stdout

    (md,) = out.glob("cifar10_gpu-*-cpu-smoke.md")
    text = md.read_text()
    for name in ("fast: shards -> results, decode cold", "fast: shards -> results, decode warm",
                 "accurate: recipe training loop only"):
        assert f"| {name} | 1 |" in text
    assert "| decode train+test shards to uint8, cache empty | 2 |" in text  # one per recipe
    assert "airbench skipped (--smoke)" in text and "500 train / 500 test images" in text

    report = json.loads(md.with_suffix(".json").read_text())
    assert report["header"]["runs"] == 1 and report["header"]["torch"] == torch.__version__
    assert len(report["header"]["git_commit"]) >= 7
    assert report["config"]["recipes"]["fast"]["hyperparameters"]["widths"] == [8, 16, 16]
    for recipe in ("fast", "accurate"):
        (run,) = report["raw"][recipe]
        for kind in ("cold", "warm"):
            assert 0.0 <= run[kind]["top1"] <= 1.0 and run[kind]["wall_s"] > 0
        assert run["decode_cold_s"] > run["decode_warm_s"] >= 0
    assert "airbench94" not in report["raw"]


GUIDANCE_SCRIPT = REPO / "benchmarks" / "guidance_sweep.py"


def run_smoke(script: Path, tmp_path: Path) -> Path:
    """A benchmark's --smoke run with its work and results under tmp_path; the path of the table it wrote."""
    env = os.environ | {"CASFLOW_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, str(script), "--smoke", "--out", str(tmp_path / "results"),
                           "--work", str(tmp_path / "work")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (md,) = (tmp_path / "results").glob(f"{script.stem}-*-smoke.md")
    return md


@pytest.mark.slow
def test_guidance_sweep_smoke_writes_table_json_and_plot(tmp_path):
    md = run_smoke(GUIDANCE_SCRIPT, tmp_path)
    text = md.read_text()
    assert "| model | guidance | CAS top-1 % | CAS / real | GAN-test % | precision | recall |" in text
    assert "| real |  | " in text and "| cfg-w0 | 0 | " in text and "| cfg-w4 | 4 | " in text
    report = json.loads(md.with_suffix(".json").read_text())
    assert report["header"]["seeds"] == [0] and report["header"]["torch"] == torch.__version__
    assert report["header"]["reference_model"]["trained"] is True
    real = report["summary"]["real"]
    assert real["cas_ratio"]["mean"] == 1.0 and real["near_copies_pixels"]["mean"] == 1.0  # the train split is itself
    assert len(report["raw"]["0"]["cfg-w4"]["per_class"]["cas_top1"]) == 10
    assert md.with_suffix(".png").stat().st_size > 10_000
    assert (tmp_path / "work" / "cfg_flow.pt").exists()


RACE_SCRIPT = REPO / "benchmarks" / "race.py"


@pytest.mark.slow
def test_race_smoke_writes_table_and_json(tmp_path):
    md = run_smoke(RACE_SCRIPT, tmp_path)
    assert "| step | top-1 % seeds 0-1 | top-1 % pool mean (sd) | full best set | pool best set |" in md.read_text()
    report = json.loads(md.with_suffix(".json").read_text())
    assert [row["step"] for row in report["series"]] == [20, 40, 60]
    assert len(report["repetitions"]) == 3 and all(len(rows) == 3 for rows in report["correct"].values())
    for rep in report["repetitions"]:
        assert rep["full_trainings"] == 6 and 3 <= rep["trainings"] <= 6 and rep["pick"] in rep["best_set"]


ADAPTIVE_SCRIPT = REPO / "benchmarks" / "adaptive_seeds.py"


@pytest.mark.slow
def test_adaptive_seeds_smoke_writes_table_and_json(tmp_path):
    md = run_smoke(ADAPTIVE_SCRIPT, tmp_path)
    text = md.read_text()
    assert "| judged night | change (points, pool means) | fixed 3 seeds: flagged | adaptive {min 1, max 5}: flagged |" in text
    assert "| redraw (false alarm) | " in text and "| pca6 (detected as worse) | " in text
    report = json.loads(md.with_suffix(".json").read_text())
    assert set(report["validation"]) == {"redraw", "t0.7", "t0.5", "t0.3", "pca6"}
    assert report["header"]["futility_chosen"] in (0.05, 0.1, 0.2, 0.3, 0.5)
    for rates in report["validation"].values():
        assert rates["n"] == 20 and 1 <= rates["adaptive_seeds_mean"] <= 5
        assert sum(rates["adaptive_seeds_hist"].values()) == 20
    assert [len(rows) for rows in report["correct"]["redraw"]] == [5] * 4  # every draw has the range's max seeds
