"""The `cas` command as a user types it."""

import os
import subprocess
import sys

import pytest

from casflow.flows import steps
from casflow.flows.cli import main
from casflow.tasks.results import RunInfo


def test_bad_config_exits_2_naming_the_key(tiny_config, capsys):
    path = tiny_config([{"name": "g", "generator": {"kind": "gaussian", "temprature": 0.5}}])
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "models.0.generator.temprature" in err and "config.yaml" in err
    assert main(["run", "/no/such/config.yaml"]) == 2


def test_results_prints_the_latest_run(tmp_path, tiny_config, capsys):
    from datetime import datetime, timezone

    from casflow.tasks.metrics import ClassCounts
    from casflow.tasks.results import ModelOutcome

    store = steps.open_store(steps.read_config(str(tiny_config([{"name": "g", "generator": {"kind": "real"}}]))).store)
    counts = ClassCounts((2, 2), (2, 1), (2, 2), ((2, 0), (1, 1)))
    ok = ModelOutcome("real", "real", counts=(counts,), n_train_per_class=(5, 5), samples_cached=True,
                      classifier_cached=True, evaluation_cached=True)
    bad = ModelOutcome("broken", "npz", error="model 'broken' x.npz: no arr_1 (labels)")
    for i, run_id in enumerate(["20261122T000000Z-old", "20261123T000000Z-new"]):
        run = RunInfo(run_id, datetime(2026, 11, 22 + i, tzinfo=timezone.utc), None, "digits", "d" * 64, ("cat", "dog"), "fast",
                      "f" * 64, 0, (0,))
        steps.write_results(store, run, [ok, bad], "real")
    assert main(["results", "--store", store.url, "--per-class"]) == 0
    out = capsys.readouterr().out
    assert "run 20261123T000000Z-new" in out
    assert "real" in out and " 75.00%" in out and "dog (50.00%)" in out and "yes" in out
    assert "broken: model 'broken' x.npz: no arr_1 (labels)" in out
    assert "1 dog" in out and "50.00%" in out
    assert main(["results", "--store", store.url, "--list"]) == 0
    assert capsys.readouterr().out.split() == ["20261122T000000Z-old", "20261123T000000Z-new"]
    assert main(["results", "--store", str(tmp_path / "empty")]) == 1


@pytest.mark.slow
def test_cas_demo_twice_second_run_all_cached(tmp_path):
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect"))
    command = [sys.executable, "-m", "casflow.flows.cli", "demo", "--store", str(tmp_path / "store")]
    first = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    second = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    table = second.stdout.split("cached\n", 1)[1].split("\n\n")[0]  # the summary table ends at the first blank line
    rows = [line.split() for line in table.splitlines()[1:]]
    assert [r[0] for r in rows] == ["real", "gaussian-pca32", "gaussian-pca32-t0.3", "gaussian-pca4", "shuffled-labels"]
    assert all(r[-1] == "yes" for r in rows)
    assert "training fast classifier" not in second.stdout + second.stderr
    assert "training fast classifier" in first.stdout + first.stderr


def test_configs_that_lose_models_or_results_exit_2(tmp_path, tiny_config, capsys):
    path = tiny_config([{"name": "g", "generator": {"kind": "gaussian"}}])
    text = path.read_text()
    doubled = tmp_path / "doubled.yaml"
    doubled.write_text(text + "models:\n  - {name: h, generator: {kind: real-shuffled}}\n")
    assert main(["run", str(doubled)]) == 2
    assert "doubled.yaml: duplicate key 'models' at line" in capsys.readouterr().err

    latin = tmp_path / "latin.yaml"
    latin.write_bytes(text.replace("name: g", "name: g\n  # caf\xe9").encode("latin-1"))
    assert main(["run", str(latin)]) == 2
    assert "latin.yaml: not UTF-8 text (byte 0xe9 at line" in capsys.readouterr().err

    for url, words in (("memory://casflow", "would vanish when the run ends"),
                       ("simplecache::s3://bucket/prefix", "chained URLs"),
                       ("http://example.org/store", "not a store casflow can keep results in")):
        assert main(["run", str(path), "--store", url]) == 2
        err = capsys.readouterr().err
        assert f"store.url {url}: " in err and words in err, err
    assert main(["results", "--store", "memory://casflow"]) == 2
    assert "store.url memory://casflow: memory:// lives in this process only" in capsys.readouterr().err
    assert main(["results", "--config", str(doubled)]) == 2
    assert "duplicate key 'models'" in capsys.readouterr().err
    memory = tmp_path / "memory.yaml"
    memory.write_text(text.replace(f"url: {tmp_path / 'store'}", "url: memory://casflow"))
    assert main(["run", str(memory)]) == 2
    assert "memory.yaml: store.url memory://casflow: " in capsys.readouterr().err


def test_config_that_never_ends_exits_2_at_once(tmp_path, capsys):
    import time

    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)
    for path in ("/dev/zero", str(fifo), str(tmp_path)):
        started = time.perf_counter()
        assert main(["run", path]) == 2
        assert time.perf_counter() - started < 5
        err = capsys.readouterr().err
        assert f"{path}: not a regular file" in err, err
    big = tmp_path / "big.yaml"
    big.write_bytes(b"# padding\n" * 200_000)
    assert main(["run", str(big)]) == 2
    assert "big.yaml: 2000000 bytes, more than a config may have (1048576)" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["silent", "closed"])
def test_run_on_a_store_that_never_answers_fails_fast_naming_it(tmp_path, tiny_config, kind):
    import time

    from helpers import Unanswering

    path = tiny_config([{"name": "g", "generator": {"kind": "gaussian"}}])
    with Unanswering() as endpoints:
        env = dict(os.environ, AWS_ENDPOINT_URL=endpoints.url(kind), AWS_ACCESS_KEY_ID="key", AWS_SECRET_ACCESS_KEY="secret",
                   AWS_DEFAULT_REGION="us-east-1", PREFECT_HOME=str(tmp_path / "prefect"))
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "casflow.flows.cli", "run", str(path), "--store", "s3://casflow/cas"],
                                capture_output=True, text=True, env=env, timeout=240)
        seconds = time.monotonic() - started
    assert result.returncode == 1, result.stderr[-2000:]
    assert f"store s3://casflow/cas at {endpoints.url(kind)} did not answer" in result.stderr, result.stderr[-2000:]
    assert seconds < 40, seconds  # python and torch imports included
