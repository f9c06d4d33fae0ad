"""A store: one root URL, content-addressed layout, atomic writes.

Layout (the only place paths are built; see `Store.location`):
  real/<dataset_fp>/{train,eval}/shard-000000.tar ... manifest.json
  samples/<samples_fp>/shard-000000.tar ... manifest.json
  classifiers/<classifier_fp>/model.pt, train_log.json
  evaluations/<evaluation_fp>/predictions.parquet, metrics.json
  scores/<scores_fp>/scores.json
  results/{per_class,changes,summary}/date=YYYY-MM-DD/run=<run_id>/part-0.parquet
  reports/<run_id>/index.html
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from typing import IO, Any, Literal

import fsspec
from fsspec.implementations.local import LocalFileSystem

from casflow.storage.atomic import atomic_file, is_debris, is_temporary
from casflow.tasks.exits import USAGE, CasError

Kind = Literal["real", "samples", "classifiers", "evaluations", "scores"]
KINDS: tuple[str, ...] = ("real", "samples", "classifiers", "evaluations", "scores", "galleries")
TOP_FOLDERS = (*KINDS, "results", "reports")  # what a store holds at its root


def s3_options(endpoint_url: str | None = None, region: str | None = None, key: str | None = None,
               secret: str | None = None) -> dict[str, Any]:
    """fsspec/s3fs options. Unset values fall back to the AWS_* environment variables (botocore's own lookup)."""
    options: dict[str, Any] = {
        "use_listings_cache": False,  # other processes write here too; a stale listing would hide their commits
        "config_kwargs": {"connect_timeout": 5, "read_timeout": 60,
                          "retries": {"max_attempts": 8, "mode": "standard"}},  # backoff over restarts and throttling
    }
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["endpoint_url"] = endpoint
    if region or os.environ.get("AWS_DEFAULT_REGION"):
        options["client_kwargs"] = {"region_name": region or os.environ["AWS_DEFAULT_REGION"]}
    if key:
        options["key"], options["secret"] = key, secret
    return options


class IntegrityError(CasError, ValueError):
    """A committed object that disagrees with its commit marker (size, sha256) or cannot be parsed:
    corruption at rest. Never retried; `cas verify --fix` removes it so that the next run rebuilds it."""


REBUILD = "run `cas verify --fix` to remove it; the next run rebuilds it"


# Where a store's objects outlive the process that wrote them, and casflow's atomic writes are tested:
# a local folder (or file://) and S3.
DURABLE_PROTOCOLS = ("file", "local", "s3", "s3a")


def store_url_problem(url: str) -> str | None:
    """Why a store URL cannot keep a run's results, or None when it can."""
    if "::" in url:
        return "chained URLs (a cache or archive in front of a store) are not a store; give a local folder or s3://bucket/prefix"
    if "://" not in url:
        return None  # a local folder
    protocol = url.split("://", 1)[0].lower()
    if protocol in DURABLE_PROTOCOLS:
        return None
    if protocol == "memory":
        return ("memory:// lives in this process only: the results would vanish when the run ends; "
                "give a local folder or s3://bucket/prefix")
    return (f"{protocol}:// is not a store casflow can keep results in (it writes to "
            f"{', '.join(p + '://' for p in DURABLE_PROTOCOLS if p != 'local')} or a local folder)")


def filesystem(url: str, s3: dict[str, Any]) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and path of a URL: a local path, file://, s3:// (with these options) or any fsspec URL."""
    if url.startswith("s3://") or url.startswith("s3a://"):
        return fsspec.url_to_fs(url.replace("s3a://", "s3://", 1), **s3)
    if "://" in url and not url.startswith("file://"):
        return fsspec.url_to_fs(url)
    fs = LocalFileSystem(auto_mkdir=True)
    return fs, os.path.abspath(url.removeprefix("file://"))


class StoreUnreachable(CasError, ConnectionError):
    """The store did not answer at all: a wrong endpoint or a server that is down, not worth minutes of retries."""


class StoreRefused(CasError, PermissionError):
    """The store answered, and refused what was asked: missing or wrong credentials, no permission."""


# The first contact with a remote store, before any work: short timeouts and one retry, so a store that
# never answers fails within about 30 s instead of after every step's retries (252 s). Once it has
# answered, s3_options' long retries ride out restarts and throttling.
# Measured (aiobotocore, loopback): a server that accepts and never answers fails after 2 x 2 x read timeout,
# 25 s; one whose connections are never accepted after about 17 s; a closed port after 3 s.
PROBE_CONNECT_TIMEOUT = 5
PROBE_READ_TIMEOUT = 6
PROBE_ATTEMPTS = 2


class StoreUrlError(CasError, ValueError):
    """A store URL whose results would not outlive the run (`store_url_problem`)."""

    exit_code = USAGE


class Store:
    """casflow's own objects below one root URL. Every method takes a store-relative
    key, built by `location` or `results_location`; `uri` turns one into the URL a user pastes."""

    def __init__(self, url: str, s3: dict[str, Any] | None = None):
        problem = store_url_problem(url)
        if problem:
            raise StoreUrlError(f"store.url {url}: {problem}")
        self._s3 = s3 if s3 is not None else s3_options()
        self.fs, self.root = filesystem(url, self._s3)
        self.url = url if self.is_remote else os.path.abspath(self.root)
        self.root = self.root.rstrip("/")

    def __repr__(self) -> str:  # never the credentials
        return f"Store({self.url!r})"

    @property
    def is_remote(self) -> bool:
        return not isinstance(self.fs, LocalFileSystem)

    @property
    def endpoint(self) -> str:
        """Where a remote store is reached (never the credentials)."""
        if not self.is_remote:
            return self.root
        return self._s3.get("endpoint_url") or "the default AWS S3 endpoint"

    def probe(self, readable: bool = False) -> None:
        """Raise StoreUnreachable, naming the endpoint, when an S3 store does not answer within about
        30 s. Any answer (even an error such as a missing bucket or refused credentials)
        counts: those errors are the steps' to report. With `readable` (a command that only reads, and has
        no steps to report them), an answer that refuses the request raises StoreRefused instead; a missing
        bucket does not (it holds no results, which the command says)."""
        if not (self.is_remote and "s3" in self.fs.protocol):
            return
        config = dict(self._s3.get("config_kwargs", {}), connect_timeout=PROBE_CONNECT_TIMEOUT,
                      read_timeout=PROBE_READ_TIMEOUT, retries={"max_attempts": PROBE_ATTEMPTS, "mode": "standard"})
        fs = fsspec.filesystem("s3", **dict(self._s3, config_kwargs=config, skip_instance_cache=True))
        fs.retries = 1  # s3fs's own retry loop, around botocore's
        started = time.monotonic()
        bucket, _, prefix = self.root.partition("/")
        try:
            if readable:  # what a reader needs: listing its prefix (a policy may allow that and not HeadBucket)
                fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=f"{prefix}/" if prefix else "", MaxKeys=1)
            else:
                fs.call_s3("head_bucket", Bucket=bucket)
        except Exception as exc:
            if not _no_answer(exc):
                if readable and not isinstance(exc, FileNotFoundError):
                    raise StoreRefused(f"store {self.url} at {self.endpoint} refused the request ({_reason(exc)}): "
                                       "are the credentials right (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
                                       "the config's store keys)?") from None
                return
            raise StoreUnreachable(
                f"store {self.url} at {self.endpoint} did not answer ({_reason(exc)}; gave up after "
                f"{time.monotonic() - started:.0f} s): is the endpoint right and the server up? Nothing was run"
            ) from None

    def not_a_store(self) -> str | None:
        """Why the root holds no casflow store (absent, not a folder, none of a store's folders in it), or
        None when it does."""
        if not self.is_remote and os.path.lexists(self.root) and not os.path.isdir(self.root):
            return "not a folder"
        names = set(self.listdir(""))
        if names & set(TOP_FOLDERS):
            return None
        if not names:
            return "nothing there" if self.is_remote else ("an empty folder" if os.path.isdir(self.root) else "no such folder")
        return f"none of a store's folders in it ({', '.join(f + '/' for f in TOP_FOLDERS)})"

    # ------------------------------------------------------------ layout

    def location(self, kind: Kind, fingerprint: str, *parts: str) -> str:
        """Store-relative path of an artifact: `<kind>/<fingerprint>/<parts...>`."""
        if kind not in KINDS:
            raise ValueError(f"unknown artifact kind {kind!r}")
        if len(fingerprint) < 16 or not all(c in "0123456789abcdef" for c in fingerprint):
            raise ValueError(f"not a fingerprint: {fingerprint!r}")
        return "/".join((kind, fingerprint, *parts))

    def results_location(self, table: str, date: str, run_id: str) -> str:
        return f"results/{table}/date={date}/run={run_id}/part-0.parquet"  # storage.results.PART

    def results_root(self, table: str) -> str:
        return f"results/{table}"

    def report_location(self, run_id: str) -> str:
        if not run_id or "/" in run_id or run_id.startswith("."):
            raise ValueError(f"not a run id: {run_id!r}")
        return f"reports/{run_id}/index.html"

    def path(self, relative: str) -> str:
        """Filesystem path of a store-relative path."""
        return f"{self.root}/{relative}" if relative else self.root

    def uri(self, relative: str) -> str:
        """What a user pastes into DuckDB or a shell: s3://... or an absolute local path."""
        if self.is_remote:
            protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
            return f"{protocol}://{self.path(relative)}"
        return self.path(relative)

    # ------------------------------------------------------------ reads

    def exists(self, relative: str) -> bool:
        return self.fs.exists(self.path(relative))

    def read_bytes(self, relative: str) -> bytes:
        return self.fs.cat_file(self.path(relative))

    def read_many(self, relatives: list[str]) -> list[bytes]:
        """Several objects at once (concurrent requests on an object store), in the order asked."""
        if not relatives:
            return []
        paths = [self.path(r) for r in relatives]
        fetched = self.fs.cat(paths)
        return [fetched[p] for p in paths]

    def open(self, relative: str) -> IO[bytes]:
        """A streaming read; large objects are fetched block by block."""
        return self.fs.open(self.path(relative), "rb", block_size=8 * 2**20)

    def size(self, relative: str) -> int:
        return int(self.fs.size(self.path(relative)))

    def find(self, relative: str) -> list[str]:
        """Store-relative paths of every file below a folder, sorted (empty if it does not exist)."""
        full = self.path(relative)
        try:
            paths = self.fs.find(full)
        except FileNotFoundError:
            return []
        return sorted(f"{relative}/{p[len(full) + 1:]}" for p in paths if p.startswith(full + "/"))

    def listdir(self, relative: str) -> list[str]:
        """Names directly below a folder (empty if it does not exist)."""
        full = self.path(relative)
        try:
            entries = self.fs.ls(full, detail=False)
        except FileNotFoundError:
            return []
        return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)

    # ------------------------------------------------------------ writes

    def write_bytes(self, relative: str, data: bytes) -> None:
        """All or nothing: readers see the old object, or none, or all of the new one.

        Local: write a temporary file beside it, fsync, rename over. S3: one PUT
        is atomic by itself."""
        full = self.path(relative)
        if self.is_remote:
            self.fs.pipe_file(full, data)
            return
        with atomic_file(full) as f:
            f.write(data)

    def remove_debris(self, relative: str) -> int:
        """Delete the temporary files below a folder that no live writer owns (`atomic.is_debris`)."""
        if self.is_remote:
            return 0
        removed = 0
        for name in self.listdir(relative):
            path = self.path(f"{relative}/{name}")
            if is_temporary(name) and is_debris(path):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
                    removed += 1
        return removed

    def remove(self, relative: str) -> None:
        full = self.path(relative)
        if self.fs.exists(full):
            self.fs.rm(full, recursive=True)


_TRANSIENT_NAMES = {
    "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
    "ClientConnectorError", "ClientOSError", "ServerDisconnectedError", "ServerTimeoutError",
}


# OSErrors that a retry within minutes does not cure: a full disk or quota, a read-only or too small file
# system. Retrying them only delays the error by the retries' whole schedule.
PERMANENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.ENAMETOOLONG})


def _no_answer(exc: BaseException) -> bool:
    """The request never got a response: refused, timed out or cut off, not an HTTP error."""
    return any(isinstance(e, (ConnectionError, TimeoutError)) or type(e).__name__ in _TRANSIENT_NAMES
               for e in _chain(exc))


def _reason(exc: BaseException) -> str:
    for e in _chain(exc):
        if type(e).__name__ in _TRANSIENT_NAMES or isinstance(e, (ConnectionError, TimeoutError)):
            return f"{type(e).__name__}: {e}"[:200]
    return f"{type(exc).__name__}: {exc}"[:200]


def is_transient(exc: BaseException) -> bool:
    """Worth a retry: the store was unreachable or slow, not wrong (and not full), and it answered
    before (StoreUnreachable is the verdict of the first contact)."""
    if isinstance(exc, StoreUnreachable):
        return False
    if any(isinstance(e, OSError) and e.errno in PERMANENT_ERRNOS for e in _chain(exc)):
        return False
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return True
    return any(type(e).__name__ in _TRANSIENT_NAMES for e in _chain(exc))


def _chain(exc: BaseException) -> list[BaseException]:
    seen = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen
