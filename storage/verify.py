"""`cas verify`: every committed object on a store checked against its commit
marker, and, with `--fix`, whatever can be recomputed removed so that the
next run rebuilds it.

What is checked (storage/ alone knows this layout):
  real/<fp>/{train,eval}/, samples/<fp>/   manifest.json parses; every shard it lists is there with its
                                           size and (full check) sha256; nothing else but debris
  classifiers/<fp>/                        train_log.json parses; model.pt is there with its sha256
  evaluations/<fp>/                        metrics.json parses; predictions.parquet with its sha256
  scores/<fp>/                             scores.json parses
  results/<table>/date=.../run=.../        part-0.parquet is a readable Parquet file of that table
A folder without its commit marker is an interrupted write: debris once it
has not changed for STALE_SECONDS (a younger one may be another run's
work in progress), likewise temporary files (`atomic.is_debris`).

Repairs remove shard sets, classifiers, evaluations and debris: each is
rebuilt from its fingerprint's inputs. Results and reports are history, not
recomputable: a damaged results file is reported, never removed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import time
from collections.abc import Callable, Iterator

import pyarrow.parquet as pq

from casflow.storage import artifacts, results
from casflow.storage.atomic import STALE_SECONDS, is_debris, is_temporary
from casflow.storage.shards import MANIFEST, load_shard_set
from casflow.storage.store import REBUILD, IntegrityError, Store

log = logging.getLogger("casflow.storage")


@dataclasses.dataclass(frozen=True)
class Finding:
    location: str  # store-relative path of what is wrong
    problem: str
    repair: str | None  # store-relative path whose removal lets a run rebuild it; None: nothing to remove


def verify(store: Store, *, full: bool = True) -> list[Finding]:
    """Everything wrong on the store; `full` also re-hashes every shard (reads every byte)."""
    started, findings, checked = time.perf_counter(), [], 0
    for check in (_shard_sets(store, full), _classifiers(store), _evaluations(store), _scores(store), _results(store)):
        for finding in check:
            if finding is None:
                checked += 1
                continue
            findings.append(finding)
    log.info("verify %s: %d objects checked, %d problems, %.1f s", store.url, checked, len(findings),
             time.perf_counter() - started)
    return findings


def repair(store: Store, findings: list[Finding]) -> list[str]:
    """Remove what each finding names for rebuilding; returns the removed locations."""
    removed = []
    for location in dict.fromkeys(f.repair for f in findings if f.repair):
        store.remove(location)
        removed.append(location)
        log.info("verify: removed %s; the next run rebuilds it", store.uri(location))
    return removed


# ---------------------------------------------------------------- checks; each yields None per sound object

def _shard_sets(store: Store, full: bool) -> Iterator[Finding | None]:
    folders = [f"real/{fp}/{split}" for fp in store.listdir("real") for split in store.listdir(f"real/{fp}")]
    folders += [f"samples/{fp}" for fp in store.listdir("samples")]
    for folder in folders:
        names = store.listdir(folder)
        if MANIFEST not in names:
            yield from _uncommitted(store, folder, names, "no manifest.json")
            continue
        try:
            shard_set = load_shard_set(store, folder)  # parses the manifest, checks every shard's presence and size
        except IntegrityError as exc:
            yield Finding(folder, _problem(exc), folder)
            continue
        listed = {s.name for s in shard_set.shards} | {MANIFEST}
        yield from _debris(store, folder, [n for n in names if n not in listed])
        if full:
            for shard in shard_set.shards:
                location = f"{folder}/{shard.name}"
                digest = hashlib.sha256(store.read_bytes(location)).hexdigest()
                if digest != shard.sha256:
                    yield Finding(location, f"sha256 {digest[:16]}... disagrees with the manifest's {shard.sha256[:16]}...", folder)
                    break
        yield None


def _classifiers(store: Store) -> Iterator[Finding | None]:
    for fp in store.listdir("classifiers"):
        folder = f"classifiers/{fp}"
        names = store.listdir(folder)
        if artifacts.TRAIN_LOG not in names:
            yield from _uncommitted(store, folder, names, f"no {artifacts.TRAIN_LOG}")
            continue
        if artifacts.WEIGHTS not in names:
            yield Finding(f"{folder}/{artifacts.WEIGHTS}", "missing, though its commit marker is there", folder)
            continue
        try:
            artifacts.read_weights(store, fp)  # checks the sha256 its marker recorded
        except IntegrityError as exc:
            yield Finding(folder, _problem(exc), folder)
            continue
        yield from _debris(store, folder, [n for n in names if n not in (artifacts.TRAIN_LOG, artifacts.WEIGHTS)])
        yield None


def _evaluations(store: Store) -> Iterator[Finding | None]:
    def check(fp: str, names: list[str]) -> None:
        metrics = artifacts.read_evaluation(store, fp)
        if "predictions_sha256" in metrics and artifacts.PREDICTIONS not in names:
            raise IntegrityError(f"{artifacts.PREDICTIONS} missing, though its commit marker names it")
        artifacts.read_predictions(store, fp)  # checks the sha256 its marker recorded

    return _marked_folders(store, "evaluations", artifacts.METRICS, (artifacts.METRICS, artifacts.PREDICTIONS), check)


def _scores(store: Store) -> Iterator[Finding | None]:
    return _marked_folders(store, "scores", artifacts.SCORES, (artifacts.SCORES,),
                           lambda fp, names: artifacts.read_scores(store, fp))


def _marked_folders(store: Store, kind: str, marker: str, files: tuple[str, ...],
                    check: Callable[[str, list[str]], object]) -> Iterator[Finding | None]:
    """Each `kind/<fp>` folder committed by `marker`: `check(fp, names)` raises IntegrityError for what is
    wrong in it; names beside `files` are debris."""
    for fp in store.listdir(kind):
        folder = f"{kind}/{fp}"
        names = store.listdir(folder)
        if marker not in names:
            yield from _uncommitted(store, folder, names, f"no {marker}")
            continue
        try:
            check(fp, names)
        except IntegrityError as exc:
            yield Finding(folder, _problem(exc), folder)
            continue
        yield from _debris(store, folder, [n for n in names if n not in files])
        yield None


def _results(store: Store) -> Iterator[Finding | None]:
    for table in results.TABLES:
        for location in store.find(store.results_root(table)):
            name = location.rsplit("/", 1)[-1]
            if is_temporary(name):
                yield from _debris(store, location.rsplit("/", 1)[0], [name])
                continue
            if name != results.PART:
                continue
            try:
                pq.read_table(io.BytesIO(store.read_bytes(location)), schema=results.TABLES[table])
            except Exception as exc:  # pyarrow raises many types for a damaged file
                yield Finding(location, f"unreadable {table} results ({type(exc).__name__}: {str(exc)[:120]}); "
                                        "results are history and are not rebuilt: restore it from a backup or delete it", None)
                continue
            yield None


def _uncommitted(store: Store, folder: str, names: list[str], missing: str) -> Iterator[Finding]:
    """A folder without its commit marker: an interrupted write, or another run's work in progress while young."""
    if all(_older_than(store, f"{folder}/{n}", STALE_SECONDS) for n in names):
        yield Finding(folder, f"{missing}: an interrupted write, never committed", folder)


def _debris(store: Store, folder: str, names: list[str]) -> Iterator[Finding]:
    for name in names:
        location = f"{folder}/{name}"
        if is_temporary(name) and (store.is_remote or is_debris(store.path(location))):
            yield Finding(location, "a temporary file of an interrupted write", location)
        elif not is_temporary(name):
            yield Finding(location, "not part of the committed object", None)


def _older_than(store: Store, location: str, seconds: float) -> bool:
    try:
        return time.time() - store.fs.modified(store.path(location)).timestamp() > seconds
    except (FileNotFoundError, NotImplementedError, AttributeError):
        return True


def _problem(exc: Exception) -> str:
    """An IntegrityError's words without the remedy, which `cas verify` states once."""
    return str(exc).split(f"; {REBUILD}")[0]


def render(store: Store, findings: list[Finding]) -> str:
    """One line per finding, naming the object."""
    lines = []
    for f in findings:
        uri = store.uri(f.location)
        text = f.problem if f.problem.startswith(uri) else f"{uri}: {f.problem}"
        lines.append(text + ("" if f.repair else " (not removed by --fix)"))
    return "\n".join(lines)
