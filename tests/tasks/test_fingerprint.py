import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from casflow.tasks.fingerprint import CODE_VERSIONS, canonical_json, code_version, derive_seed, fingerprint

PACKAGE = Path(__file__).resolve().parents[2]


def test_canonical_json_ignores_key_order():
    assert canonical_json({"b": 1, "a": [1, 2]}) == canonical_json({"a": (1, 2), "b": 1}) == '{"a":[1,2],"b":1}'


def test_fingerprint_changes_with_each_input_and_mixes_in_the_step_version():
    base = fingerprint("samples", {"seed": 0, "spec": {"kind": "gaussian"}})
    assert base == fingerprint("samples", {"spec": {"kind": "gaussian"}, "seed": 0})
    assert base != fingerprint("samples", {"seed": 1, "spec": {"kind": "gaussian"}})
    assert base != fingerprint("classifier", {"seed": 0, "spec": {"kind": "gaussian"}})
    payload = {"step": "samples", "code_version": CODE_VERSIONS["samples"], "inputs": {"seed": 0, "spec": {"kind": "gaussian"}}}
    assert base == hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def test_the_code_versions_are_one_listed_table():
    # A bump must show up here: a forgotten one serves stale cache hits with no error, and an accidental one
    # recomputes every user's store. Change this listing only together with the code whose output changed.
    assert CODE_VERSIONS == {
        "dataset": 2, "samples": 2, "classifier": 1, "evaluation": 2, "scores": 2, "recipe": 1, "gallery": 1,
        "recipe:fast": 2, "recipe:accurate": 2, "recipe:paper": 1, "generator:gaussian": 2,
    }
    with pytest.raises(KeyError, match="CODE_VERSIONS"):
        code_version("recipe:unknown")


def test_no_code_version_lives_outside_the_table():
    sources = [p for d in ("tasks", "storage", "flows") for p in (PACKAGE / d).rglob("*.py")]
    assert len(sources) > 20
    for path in sources:
        if path.name == "fingerprint.py":
            continue
        text = path.read_text()
        assert not re.search(r"^\s*\w*VERSIONS?\s*[:=]", text, re.M), f"{path}: a code version outside CODE_VERSIONS"
        assert not re.search(r"fingerprint\(\s*\"\w+\"\s*,\s*\d", text), f"{path}: a literal code version in a fingerprint"


def test_fingerprint_is_pinned_and_stable_across_processes():
    # Pinned: a change here silently invalidates every user's cache, so it must be deliberate.
    expected = "42673a8af317af685860f94cac79feb3e14fdf564d54b476cdeea7c79f6f83e5"  # samples at code version 2
    code = "from casflow.tasks.fingerprint import fingerprint; print(fingerprint('samples', {'seed': 0}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == fingerprint("samples", {"seed": 0}) == expected


def test_derive_seed_is_deterministic_and_distinct():
    assert derive_seed(0, 1) == derive_seed(0, 1)
    assert len({derive_seed(0, i) for i in range(100)}) == 100
    assert 0 <= derive_seed(5, "x") < 2**32
