"""Imports point one way: flows -> tasks, storage. tasks/ and storage/ never
import flows/ or Prefect, and tasks/ never reaches into storage/; none of them
imports the Python API (api/, the package `casflow` itself). Everything
lives in the casflow namespace, so a user's own `tasks` or `flows` never
collides with ours."""

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("flows", "tasks", "storage")
FORBIDDEN = {
    "tasks": ("casflow.flows", "casflow.storage", "prefect", "fsspec", "s3fs"),
    "storage": ("casflow.flows", "casflow.tasks", "prefect"),
    "flows": (),
}
# The one module of tasks/ that storage/ may import: the errors' base class and exit statuses, which both
# layers' errors share. It stays a leaf (test_the_shared_leaf_imports_nothing), so importing it brings in
# nothing else of tasks/.
ALLOWED = {"storage": ("casflow.tasks.exits",)}


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


def _under(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_one_way_and_stay_in_the_namespace(package):
    offenders = {}
    for path in sorted((REPO / package).rglob("*.py")):
        modules = imported_modules(path)
        bad = {m for m in modules if (_under(m, FORBIDDEN[package]) or _under(m, PACKAGES))  # bare `tasks.x` too
               and m not in ALLOWED.get(package, ())}
        if bad:
            offenders[str(path.relative_to(REPO))] = sorted(bad)
    assert offenders == {}


def test_nothing_below_the_python_api_imports_it():
    """api/ is the package `casflow` itself (evaluate, results, submit_checkpoint): it wires flows/ and storage/
    for Python callers, and none of them imports it back."""
    api = tuple(f"casflow.{path.stem}" for path in (REPO / "api").glob("*.py") if path.stem != "__init__")
    assert api  # the checker sees the API's modules
    offenders = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            bad = {m for m in imported_modules(path) if m == "casflow" or _under(m, api)}
            if bad:
                offenders[str(path.relative_to(REPO))] = sorted(bad)
    assert offenders == {}


def test_the_shared_leaf_imports_nothing():
    """What storage/ may import of tasks/ imports nothing itself, and neither does the package it sits in."""
    for module in ALLOWED["storage"]:
        package, name = module.removeprefix("casflow.").split(".")
        assert imported_modules(REPO / package / f"{name}.py") <= {"__future__"}
        assert imported_modules(REPO / package / "__init__.py") == set()


def test_the_checker_sees_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nfrom casflow.flows.steps import x\ndef f():\n    import prefect\n")
    assert imported_modules(probe) == {"os", "casflow.flows.steps", "prefect"}


def _run(script: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


STEPS = """
    from casflow.flows import steps
    from casflow.tasks.config import parse_config

    config = parse_config('''
    store: {{url: store}}
    classifier: {{options: {{widths: [8, 8, 8], epochs: 1, batch_size: 256}}, device: cpu}}
    models: [{{name: mine, generator: {generator}}}]
    ''')
    store = steps.open_store(config.store)
    dataset = steps.prepare_dataset(config, store)
    samples = steps.draw_samples(config, store, config.models[0], dataset, "cpu")
    print("samples", samples.shard_set.num_samples)
"""


def test_a_users_own_tasks_flows_and_storage_modules_do_not_shadow_ours(tmp_path):
    """Invoke, Celery and Django projects have a tasks.py; Prefect projects have flows/."""
    for name in PACKAGES:
        (tmp_path / f"{name}.py").write_text(f"raise ImportError('the user\\'s own {name}.py was imported')\n")
    done = _run(STEPS.format(generator="{kind: gaussian, components: 4}"), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "samples 1438" in done.stdout


def test_a_users_entry_point_may_live_in_a_package_named_tasks(tmp_path):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "__init__.py").write_text("")
    (tmp_path / "tasks" / "mygen.py").write_text(textwrap.dedent("""
        import numpy as np

        class Sampler:
            def sample(self, labels, seed):
                return np.random.default_rng(seed).integers(0, 256, (len(labels), 8, 8, 1), dtype=np.uint8)

        def factory(checkpoint, device):
            return Sampler()
    """))
    done = _run(STEPS.format(generator="{kind: python, entry_point: 'tasks.mygen:factory'}"), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "samples 1438" in done.stdout
