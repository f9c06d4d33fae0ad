"""Text-to-image models scored through prompts: a sampler with
`takes_prompts = True` gets one prompt per label, built from the dataset's
class names and the config's `prompt_template`, and the template is in the
samples' fingerprint. A stand-in model (no weights) reads the digit from its
prompt, so a prompt that does not match its label shows in the samples."""

from __future__ import annotations

import importlib
import textwrap

import numpy as np
import pytest

from casflow.flows import records, shard_data, steps
from casflow.tasks.generators import python_entry
from helpers import write_config

STAND_IN = "casflow_prompt_stand_in"
GREY_STEP = 20  # the stand-in draws digit d as grey level 20 d plus noise below 20

SOURCE = f'''
import re

import numpy as np

PROMPTS_SEEN = []


class PromptedDigits:
    """Reads the class name, the last number in the prompt, and draws a flat image of grey level 20 * digit."""

    takes_prompts = True
    num_classes = 10

    def sample(self, labels, seed, prompts):
        PROMPTS_SEEN.extend(prompts)
        digits = np.array([int(re.search(r"(\\d+)\\D*$", prompt).group(1)) for prompt in prompts])
        noise = np.random.default_rng(seed).integers(0, {GREY_STEP}, (len(prompts), 8, 8, 1))
        return (digits.reshape(-1, 1, 1, 1) * {GREY_STEP} + noise).astype(np.uint8)


class Unprompted:
    """A class-conditional model as before prompts existed: sample(labels, seed) and nothing else."""

    def sample(self, labels, seed):
        noise = np.random.default_rng(seed).integers(0, {GREY_STEP}, (len(labels), 8, 8, 1))
        return (np.asarray(labels).reshape(-1, 1, 1, 1) * {GREY_STEP} + noise).astype(np.uint8)


def prompted(checkpoint, device):
    return PromptedDigits()


def unprompted(checkpoint, device):
    return Unprompted()
'''


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    (tmp_path / f"{STAND_IN}.py").write_text(textwrap.dedent(SOURCE))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(STAND_IN)
    module.PROMPTS_SEEN.clear()
    return module


def draw(tmp_path, factory: str, **generator) -> tuple[records.SamplesRecord, np.ndarray, np.ndarray]:
    """The stand-in's samples through steps.draw_samples, decoded."""
    path = write_config(tmp_path, [{"name": "t2i", "generator": {"kind": "python", "entry_point": f"{STAND_IN}:{factory}",
                                                                  "batch_size": 300, **generator}}])
    config = steps.read_config(str(path))
    store = steps.open_store(config.store)
    dataset = steps.prepare_dataset(config, store)
    samples = steps.draw_samples(config, store, config.models[0], dataset, "cpu")
    images, labels = shard_data.load_decoded(store, samples.shard_set, "t2i")
    return samples, images, labels


def test_prompts_follow_the_labels_and_the_template(tmp_path, stand_in):
    template = "a pencil sketch of the digit {class_name}, centred"
    samples, images, labels = draw(tmp_path, "prompted", prompt_template=template)
    assert not samples.cached and len(labels) == 1438
    assert np.array_equal(images.reshape(len(images), -1).min(1) // GREY_STEP, labels)  # each image drew its label's prompt
    assert set(stand_in.PROMPTS_SEEN) == {template.format(class_name=str(d)) for d in range(10)}
    assert len(stand_in.PROMPTS_SEEN) == 1438


def test_the_template_is_in_the_fingerprint(tmp_path, stand_in):
    first, _, _ = draw(tmp_path, "prompted", prompt_template="a photo of the digit {class_name}")
    again, _, _ = draw(tmp_path, "prompted", prompt_template="a photo of the digit {class_name}")
    other, _, _ = draw(tmp_path, "prompted", prompt_template="the handwritten digit {class_name}")
    default, _, _ = draw(tmp_path, "prompted")
    assert again.cached and again.shard_set.fingerprint == first.shard_set.fingerprint
    assert len({first.shard_set.fingerprint, other.shard_set.fingerprint, default.shard_set.fingerprint}) == 3
    assert not other.cached and not default.cached


def test_at_its_default_the_template_leaves_fingerprints_as_they_were(tmp_path, stand_in):
    """Samples stored before prompt_template existed keep their fingerprint: the default is left out."""
    from casflow.storage.sources import Files

    spec = python_entry.PythonGenerator(kind="python", entry_point=f"{STAND_IN}:unprompted")
    files = Files(max_file_bytes=2**20, max_files=100)
    assert "prompt_template" not in python_entry.content(spec, files, "m")["generator"]
    custom = spec.model_copy(update={"prompt_template": "digit {class_name}"})
    assert python_entry.content(custom, files, "m")["generator"]["prompt_template"] == "digit {class_name}"


def test_a_sampler_without_prompts_is_called_as_before(tmp_path, stand_in):
    _, images, labels = draw(tmp_path, "unprompted", prompt_template="ignored {class_name}")
    assert np.array_equal(images.reshape(len(images), -1).min(1) // GREY_STEP, labels)
    assert stand_in.PROMPTS_SEEN == []


def test_class_prompts_fill_the_template():
    assert python_entry.class_prompts("a {{logo}} of a {class_name}", ("cat", "dog")) == ("a {logo} of a cat", "a {logo} of a dog")
    assert python_entry.PythonGenerator(kind="python", entry_point="m:f").prompt_template == "a photo of a {class_name}"
