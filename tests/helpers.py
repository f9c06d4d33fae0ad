"""Helpers shared by test modules (import them as `from helpers import ...`)."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
# a CIFAR-10 copy elsewhere (a GPU machine without ../shared beside the checkout) through CASFLOW_CIFAR10
CIFAR10 = Path(os.environ.get("CASFLOW_CIFAR10", REPO.parent / "shared" / "datasets" / "cifar10"))

# The demo's recipe, smaller still: about a second per model on two CPU cores.
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
        "scores": {"augmentation": []},  # the Naive Augmentation Score trains a classifier per ratio: tests ask for it
        "seed": 0,
        "models": models,
    } | sections
    path = directory / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_steps(config_path: Path, evaluate: bool = True, every_classifier: bool = False):
    """Every model of a config through the steps in this process, on the CPU, without Prefect: per model
    a ModelChain of one seed (its evaluation None unless `evaluate`), or with `every_classifier` of every
    classifier seed and NAS ratio, as the flow orders them. Returns (config, store, dataset, that dict)."""
    from casflow.flows import steps
    from casflow.flows.records import ModelChain

    config = steps.read_config(str(config_path))
    store = steps.open_store(config.store)
    dataset = steps.prepare_dataset(config, store)
    done = {}
    for model in config.all_models:
        samples = steps.draw_samples(config, store, model, dataset, "cpu")

        def pair(seed, ratio=None, samples=samples):
            classifier = steps.train_classifier(config, store, samples, dataset, "cpu", seed, ratio)
            return classifier, steps.evaluate_classifier(config, store, classifier, dataset, "cpu") if evaluate else None

        if not every_classifier:
            done[model.name] = ModelChain(samples, (pair(config.seed),))
            continue
        done[model.name] = ModelChain(samples, tuple(pair(s) for s in config.classifier_seeds),
                                      tuple(pair(config.classifier_seeds[0], r) for r in config.augmentation_ratios(model)))
    return config, store, dataset, done


def run_night(config_path: Path, night: int, start):
    """Night `night` after `start` (a datetime): every model of a config through the steps (run_steps, every
    classifier seed), its results written as the flow's last step writes them. Returns the ResultsRecord."""
    from datetime import timedelta

    from casflow.flows import steps
    from casflow.tasks.results import RunInfo

    config, store, dataset, chains = run_steps(config_path, every_classifier=True)
    outcomes = [steps.outcome(model, chains[model.name], error=None) for model in config.all_models]
    recipe, when = config.classifier.resolved, start + timedelta(days=night)
    run = RunInfo(f"{when:%Y%m%dT%H%M%SZ}-night{night}", when, None, dataset.name, dataset.fingerprint, dataset.class_names,
                  recipe.name, recipe.fingerprint, config.seed, config.classifier_seeds)
    return steps.write_results(store, run, outcomes, config.baseline.name)


def class_folders(root, splits: dict[str, dict[str, int]]) -> dict:
    """An imagefolder dataset of plain grey 8x8 PNGs: split -> class name -> image count."""
    import numpy as np

    from casflow.tasks.images import encode_png

    for split, classes in splits.items():
        for name, count in classes.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                (root / split / name / f"{i}.png").write_bytes(encode_png(np.full((8, 8, 1), 20 * i, np.uint8)))
    return {"kind": "imagefolder", "name": "folders", "train": str(root / "train"), "eval": str(root / "eval")}


def prefect_command() -> str:
    """The `prefect` script of the Python running the tests."""
    return str(Path(sys.executable).with_name("prefect"))


def wait_for(condition, timeout: float = 120, what: str = "condition"):
    """Poll `condition()` until it returns something true (returned), or raise TimeoutError naming `what`."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise TimeoutError(f"no {what} after {timeout} s")


def stop_worker(worker) -> None:
    """A Prefect worker started with start_new_session: SIGINT (it cancels its flow runs and exits), then the
    whole process group's SIGKILL if it has not gone in 20 s."""
    import signal
    import subprocess

    with contextlib.suppress(ProcessLookupError):
        worker.send_signal(signal.SIGINT)
    try:
        worker.wait(20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


def running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped (Linux /proc)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def flow_runs(api_url: str, deployment: str | None = None, config: Path | None = None) -> list:
    """The server's 200 latest flow runs, of one deployment (`flow/name`) or of one config file when given:
    other test processes share the server."""
    from prefect.client.schemas.sorting import FlowRunSort

    with prefect_client(api_url) as client:
        runs = client.read_flow_runs(sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=200)
        if deployment is not None:
            wanted = client.read_deployment_by_name(deployment).id
            runs = [r for r in runs if r.deployment_id == wanted]
    return [r for r in runs if config is None or r.parameters.get("config_path") == str(config)]


def deploy(env: dict, folder: Path, *names: str) -> dict[str, tuple[str, str]]:
    """prefect.yaml's deployments `names` on the server of `env` with `prefect deploy`, as `make deploy` does, but
    under names of the caller's own: from a copy of prefect.yaml in `folder` whose deployment and work pool names
    carry a suffix unique to the call, so that tests sharing a server never take each other's flow runs. Creates
    the pools, and pauses the deployments' schedules (the nightly one must not fire during a test). Returns
    {name: ("flow/deployment" to run, its work pool)}."""
    import subprocess
    import uuid

    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.workers.process import ProcessWorker

    suffix = uuid.uuid4().hex[:8]
    project = yaml.safe_load((REPO / "prefect.yaml").read_text())  # anchors resolved: each deployment its own pool
    project.pop("definitions")
    project["deployments"] = [d for d in project["deployments"] if d["name"] in names]
    deployed = {}
    for deployment in project["deployments"]:
        flow = deployment["entrypoint"].rsplit(":", 1)[1].replace("_", "-")
        pool = deployment["work_pool"] = dict(deployment["work_pool"], name=f"{deployment['work_pool']['name']}-{suffix}")
        deployed[deployment["name"]] = (f"{flow}/{deployment['name']}-{suffix}", pool["name"])
        deployment["name"] = f"{deployment['name']}-{suffix}"
    assert set(deployed) == set(names), f"prefect.yaml has no deployment {set(names) - set(deployed)}"
    (folder / "prefect.yaml").write_text(yaml.safe_dump(project, sort_keys=False))
    with prefect_client(env["PREFECT_API_URL"]) as client:
        for _, pool in deployed.values():
            client.create_work_pool(WorkPoolCreate(name=pool, type="process",
                                                   base_job_template=ProcessWorker.get_default_base_job_template()),
                                    overwrite=True)
    done = subprocess.run([prefect_command(), "--no-prompt", "deploy", "--all", "--prefect-file", str(folder / "prefect.yaml")],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with prefect_client(env["PREFECT_API_URL"]) as client:
        for name, _ in deployed.values():
            deployment = client.read_deployment_by_name(name)
            for schedule in deployment.schedules:
                client.update_deployment_schedule(deployment.id, schedule.id, active=False)
    return deployed


@contextlib.contextmanager
def prefect_client(api_url: str):
    """A sync Prefect client of the server at `api_url`."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}):
        with get_client(sync_client=True) as client:
            yield client


# A Python model that takes SLOW_SECONDS (default 0.4) per batch: runs to stop in the middle of.
SLOW_GENERATOR = """
import os
import time
import numpy as np

class Slow:
    num_classes = 10
    def sample(self, labels, seed):
        seconds = float(os.environ.get("SLOW_SECONDS", "0.4"))
        if os.environ.get("SLOW_BUSY"):  # busy in numpy on every core it gets, not asleep
            end, a = time.monotonic() + seconds, np.ones((256, 256))
            while time.monotonic() < end:
                a = np.tanh(a @ a / 256)
        else:
            time.sleep(seconds)
        rng = np.random.default_rng(seed)
        means = np.linspace(0, 255, 10)[labels][:, None, None, None]
        return np.clip(means + rng.normal(0, 20, (len(labels), 8, 8, 1)), 0, 255).astype(np.uint8)

def make(checkpoint, device):
    return Slow()
"""


def fill(folder: Path) -> None:
    """Fill a file system to its last byte (ENOSPC)."""
    import errno

    with open(folder / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc


class Unanswering:
    """Endpoints on loopback that never answer, as dead stores do: `silent` accepts connections and
    never responds, `unaccepted` never accepts them (a full backlog: SYNs are dropped, as by a
    firewall), `closed` refuses them. Use as a context manager; `url(kind)` gives http://127.0.0.1:PORT."""

    def __enter__(self):
        import socket
        import threading

        self._sockets, self.accepted = [], []  # accepted: the silent endpoint's connections, as they come
        silent = self._listen(64)
        threading.Thread(target=lambda: [self.accepted.append(silent.accept()[0]) for _ in iter(int, 1)], daemon=True).start()
        unaccepted = self._listen(0)
        for _ in range(3):  # fill the accept queue; later connects wait for a SYN-ACK that never comes
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(unaccepted.getsockname())
            self._sockets.append(filler)
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        self.ports = {"silent": silent.getsockname()[1], "unaccepted": unaccepted.getsockname()[1],
                      "closed": closed.getsockname()[1]}
        closed.close()
        return self

    def _listen(self, backlog: int):
        import socket

        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(backlog)
        self._sockets.append(server)
        return server

    def url(self, kind: str) -> str:
        return f"http://127.0.0.1:{self.ports[kind]}"

    def __exit__(self, *exc):
        for s in self._sockets + self.accepted:
            s.close()


NO_SCORES = {"gan_test": False, "features": False, "memorization": False, "augmentation": []}


def checkpoint(folder: Path, step: int, broken_classes: int, touched: int = 0) -> None:
    """Samples of a checkpoint: the real train images, the first `broken_classes` classes drawn as eights
    (a model that has not learnt them yet); `touched` changes one pixel, new bytes for the same quality."""
    import numpy as np

    from casflow.tasks.datasets import digits_splits

    train, _ = digits_splits(0.2, 0)
    images = train.images.copy()
    eights = images[train.labels == 8]
    for c in range(broken_classes):
        members = np.flatnonzero(train.labels == c)
        images[members] = eights[np.arange(len(members)) % len(eights)]
    images[0, 0, 0] ^= touched
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / f"samples-{step}.npz", arr_0=images, arr_1=train.labels)
