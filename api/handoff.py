"""casflow in a training loop: `submit_checkpoint` hands a new checkpoint to the nightly deployment and
returns at once; a worker of that deployment evaluates it while training goes on."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from casflow.tasks.exits import USAGE, CasError

NIGHTLY = "cas-evaluation/nightly-cas"  # prefect.yaml's nightly deployment


class HandOffError(CasError, ValueError):
    """A checkpoint that cannot be handed off: no such file, no Prefect server, no such deployment."""

    exit_code = USAGE


def submit_checkpoint(checkpoint: str | os.PathLike, model: str, *, config: str | os.PathLike | None = None,
                      deployment: str = NIGHTLY) -> uuid.UUID:
    """Ask `deployment` (a `cas-evaluation` deployment; default the nightly one) for a run that evaluates
    `checkpoint` as the config's model `model` (a `python` generator), and return that flow run's id
    without waiting for it. The flow run gets parameters that name things, never hyperparameters:
    `checkpoints: {model: checkpoint}`, and `config_path` when `config` is given (else the deployment's
    own config). The run evaluates the whole config: the other models are cache hits, and the model is
    judged against its previous run, the last checkpoint evaluated under its name.

    A local checkpoint (or config) is sent as its absolute path: the worker reads it there, so it must
    see this machine's files (the same machine or a shared file system); else save checkpoints to the
    store's S3 bucket and pass the s3:// URL. Write each checkpoint to a new file: the run reads the
    file when a worker picks it up, not now.

    The Prefect server is PREFECT_API_URL's, else one running at 127.0.0.1:4200 (`make server`)."""
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from casflow.flows import server, steps
    from casflow.tasks.config import with_checkpoints

    server.prefect_environment()
    parameters = {"checkpoints": {model: _location(checkpoint, f"model '{model}' checkpoint")}}
    if config is not None:
        parameters["config_path"] = _location(config, "config")
        # a model the config lacks, or one that takes no checkpoint: said now, not in the worker
        with_checkpoints(steps.read_config_text(parameters["config_path"]), parameters["checkpoints"], os.fspath(config))
    api_url = server.configured_api_url() or server.local_api_url()
    if not server.healthy(api_url, timeout=10):
        raise HandOffError(f"no Prefect server answers at {api_url}: the deployment {deployment} and its workers are on "
                           "a server; set PREFECT_API_URL to it (`make server`, `make deploy`, `make worker`)")
    with temporary_settings({PREFECT_API_URL: api_url}):
        try:
            flow_run = run_deployment(deployment, parameters=parameters, timeout=0, tags=["checkpoint", f"model:{model}"],
                                      _sync=True)  # a notebook's running event loop would otherwise get a coroutine
        except ObjectNotFound:
            raise HandOffError(f"no deployment {deployment} on the Prefect server at {api_url} (`make deploy` "
                               "deploys prefect.yaml's)") from None
    return flow_run.id


def _location(path: str | os.PathLike, what: str) -> str:
    """A URL as given; a local file as its absolute path, checked to exist now rather than in the worker."""
    text = os.fspath(path)
    if "://" in text:
        return text
    local = Path(text).resolve()
    if not local.is_file():
        raise HandOffError(f"{what} {text}: no such file")
    return str(local)
