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
def test_cas_demo_twice_second_run_all_cached(tmp_path, prefect_api):
    env = dict(os.environ, **prefect_api)  # a running server, as after `make server`: no temporary one per run
    command = [sys.executable, "-m", "casflow.flows.cli", "demo", "--store", str(tmp_path / "store")]
    first = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    second = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    table = second.stdout.split("cached\n", 1)[1].split("\n\n")[0]  # the summary table ends at the first blank line
    rows = [line.split() for line in table.splitlines()[1:]]
    assert [r[0] for r in rows] == ["real", "gaussian-pca32", "gaussian-pca32-t0.3", "gaussian-pca4", "shuffled-labels"]
    assert all(r[-1] == "yes" for r in rows)
    assert "training fast on" not in second.stdout + second.stderr
    assert "training fast on" in first.stdout + first.stderr


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
def test_run_on_a_store_that_never_answers_fails_fast_naming_it(tmp_path, tiny_config, prefect_api, kind):
    import time

    from helpers import Unanswering

    path = tiny_config([{"name": "g", "generator": {"kind": "gaussian"}}])
    with Unanswering() as endpoints:
        env = dict(os.environ, AWS_ENDPOINT_URL=endpoints.url(kind), AWS_ACCESS_KEY_ID="key", AWS_SECRET_ACCESS_KEY="secret",
                   AWS_DEFAULT_REGION="us-east-1", **prefect_api)
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "casflow.flows.cli", "run", str(path), "--store", "s3://casflow/cas"],
                                capture_output=True, text=True, env=env, timeout=240)
        seconds = time.monotonic() - started
    assert result.returncode == 1, result.stderr[-2000:]
    assert f"store s3://casflow/cas at {endpoints.url(kind)} did not answer" in result.stderr, result.stderr[-2000:]
    assert seconds < 40, seconds  # python and torch imports included


# ---------------------------------------------------------------- reading commands: errors, signals, pipes, escapes

def _store_with_runs(tiny_config, class_names=("cat", "dog"), model="real", url=None):
    """A store with two runs of one model (and a failed one), written as `cas run` writes them."""
    from datetime import datetime, timezone

    from casflow.tasks.metrics import ClassCounts
    from casflow.tasks.results import ModelOutcome

    sections = {"store": {"url": url}} if url else {}
    store = steps.open_store(steps.read_config(str(tiny_config([{"name": "g", "generator": {"kind": "real"}}], **sections))).store)
    counts = ClassCounts((2, 2), (2, 1), (2, 2), ((2, 0), (1, 1)))
    ok = ModelOutcome(model, "real", counts=(counts,), n_train_per_class=(5, 5), samples_cached=True,
                      classifier_cached=True, evaluation_cached=True)
    bad = ModelOutcome("broken", "npz", error="model 'broken' x.npz: no arr_1 (labels) \x1b[2J")
    for i, run_id in enumerate(["20261122T000000Z-old", "20261123T000000Z-new"]):
        run = RunInfo(run_id, datetime(2026, 11, 22 + i, tzinfo=timezone.utc), None, "digits", "d" * 64, class_names, "fast",
                      "f" * 64, 0, (0,))
        steps.write_results(store, run, [ok, bad], model)
    return store


def test_results_of_an_unknown_run_exits_2_in_one_line(tiny_config, capsys):
    store = _store_with_runs(tiny_config)
    assert main(["results", "--store", store.url, "--run", "20990101T000000Z-none"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"cas: no run 20990101T000000Z-none in {store.url} (`cas results --list` lists them)"


@pytest.mark.parametrize("argv", [["results"], ["results", "--list"], ["verify"], ["report"], ["compare"]])
def test_reading_commands_on_a_store_that_never_answers_fail_in_one_line(monkeypatch, capsys, argv):
    import time

    from helpers import Unanswering

    with Unanswering() as endpoints:
        for key, value in dict(AWS_ENDPOINT_URL=endpoints.url("closed"), AWS_ACCESS_KEY_ID="key",
                               AWS_SECRET_ACCESS_KEY="secret", AWS_DEFAULT_REGION="us-east-1").items():
            monkeypatch.setenv(key, value)
        started = time.monotonic()
        code = main([*argv, "--store", "s3://casflow/cas"])
        seconds = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.count("\n") == 1 and err.startswith(f"cas: store s3://casflow/cas at {endpoints.url('closed')} did not answer"), err
    assert seconds < 30, seconds


@pytest.mark.s3
@pytest.mark.parametrize("credentials", ["wrong", "none"])
def test_reading_commands_refused_by_the_store_fail_in_one_line(s3, monkeypatch, capsys, credentials):
    import time

    if credentials == "wrong":
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    else:
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no credentials from a cloud machine's metadata either
    for argv in (["results"], ["verify"]):
        started = time.monotonic()
        code = main([*argv, "--store", s3.store_url])
        seconds = time.monotonic() - started
        err = capsys.readouterr().err
        assert code == 1, err
        assert err.count("\n") == 1 and err.startswith(f"cas: store {s3.store_url} at {s3.env['AWS_ENDPOINT_URL']} refused"), err
        assert seconds < 30, seconds


@pytest.mark.s3
def test_reading_commands_on_s3_with_the_right_credentials(s3, tiny_config, capsys):
    assert main(["verify", "--store", s3.store_url]) == 2  # nothing there yet
    assert capsys.readouterr().err == f"cas: {s3.store_url}: not a casflow store (nothing there); nothing to verify\n"
    _store_with_runs(tiny_config, url=s3.store_url)
    assert main(["results", "--list", "--store", s3.store_url]) == 0
    assert capsys.readouterr().out.split() == ["20261122T000000Z-old", "20261123T000000Z-new"]
    assert main(["verify", "--quick", "--store", s3.store_url]) == 0
    assert "nothing wrong" in capsys.readouterr().out


def test_verify_of_a_path_that_holds_no_store_exits_2_in_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "other" / "photos").mkdir(parents=True)
    for name, why in (("absent", "no such folder"), ("file", "not a folder"), ("empty", "an empty folder"),
                      ("other", "none of a store's folders in it")):
        assert main(["verify", "--store", str(tmp_path / name)]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.count("\n") == 1 and captured.err.startswith(f"cas: {tmp_path / name}: not a casflow store ({why}"), \
            captured.err
    assert not (tmp_path / "absent").exists()


def test_results_list_of_a_path_that_holds_no_store_says_so(tmp_path, capsys):
    assert main(["results", "--list", "--store", str(tmp_path / "absent")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"cas: {tmp_path / 'absent'}: not a casflow store (no such folder); no runs to list\n"


def test_ctrl_c_in_a_reading_command_exits_130_without_a_traceback(tmp_path):
    import signal
    import time

    from helpers import Unanswering, wait_for

    with Unanswering() as endpoints:  # a store that never answers: the command is still waiting when Ctrl-C comes
        env = dict(os.environ, AWS_ENDPOINT_URL=endpoints.url("silent"), AWS_ACCESS_KEY_ID="key", AWS_SECRET_ACCESS_KEY="secret",
                   AWS_DEFAULT_REGION="us-east-1")
        cas = subprocess.Popen([sys.executable, "-m", "casflow.flows.cli", "results", "--store", "s3://casflow/cas"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: endpoints.accepted, timeout=120, what="cas's connection to the store")  # imports done, waiting
        time.sleep(0.5)
        cas.send_signal(signal.SIGINT)
        out, err = cas.communicate(timeout=20)
    assert cas.returncode == 130, err
    assert err.strip() == "cas: stopped by SIGINT", err


def test_a_command_stopped_by_keyboard_interrupt_exits_130(capsys):
    from casflow.flows import lifecycle

    def interrupted() -> int:
        raise KeyboardInterrupt

    assert lifecycle.guarded(interrupted) == 130
    assert capsys.readouterr().err == "\ncas: stopped by SIGINT\n"


def test_output_to_a_closed_pipe_ends_without_a_traceback(tiny_config):
    store = _store_with_runs(tiny_config)
    cas = subprocess.Popen([sys.executable, "-m", "casflow.flows.cli", "results", "--per-class", "--store", store.url],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cas.stdout.close()  # as `| head -1` does once it has its line
    err = cas.stderr.read()
    assert cas.wait(timeout=60) == 141, err
    assert err == ""


def test_control_characters_from_users_are_escaped_in_terminal_output(tiny_config, capsys):
    store = _store_with_runs(tiny_config, class_names=("\x1b]0;pwned\x07cat", "dog"), model="re\x9bal")
    assert main(["results", "--per-class", "--store", store.url]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out
    assert "\\x1b]0;pwned\\x07cat" in out and "re\\x9bal" in out and "no arr_1 (labels) \\x1b[2J" in out
    assert main(["results", "--store", store.url, "--run", "\x1b[31mred"]) == 2
    assert capsys.readouterr().err.startswith("cas: no run \\x1b[31mred in ")


def test_printable_escapes_control_characters_once():
    from casflow.flows.terminal import printable

    assert printable("a\x1b[2Jb\tc\r\nd\x7f\x85") == "a\\x1b[2Jb\\tc\\r\nd\\x7f\\x85"
    assert printable("a\nb", newlines=False) == "a\\nb"
    assert printable(printable("\x1b]0;t\x07")) == printable("\x1b]0;t\x07")
    assert printable("café ✓") == "café ✓"
