import json
import re

import pytest
from pydantic import ValidationError

from casflow.tasks.config import ConfigError, parse_config, with_checkpoints, without_credentials

GOOD = """
models:
  - name: g
    generator: {kind: gaussian, components: 8}
"""


def test_defaults_and_implicit_baseline():
    config = parse_config(GOOD)
    assert config.store.url == "./casflow-store"
    assert config.dataset.kind == "digits"
    assert config.classifier.recipe == "fast"
    assert [m.name for m in config.all_models] == ["real", "g"]
    assert config.baseline.generator.kind == "real"


def test_defaults_add_at_most_one_training_per_model():
    config = parse_config(GOOD)
    assert len(config.classifier_seeds) + len(config.scores.augmentation) <= 2  # the CAS training and one NAS


def test_the_nightly_config_judges_with_three_seeds():
    from helpers import REPO

    config = parse_config((REPO / "configs" / "nightly.yaml").read_text())
    assert len(config.classifier_seeds) == 3 and len(config.scores.augmentation) <= 1


def test_explicit_real_model_is_the_baseline():
    config = parse_config("models:\n  - {name: upper, generator: {kind: real}}\n  - {name: g, generator: {kind: gaussian}}\n")
    assert config.baseline.name == "upper"
    assert [m.name for m in config.all_models] == ["upper", "g"]


def test_config_is_frozen():
    config = parse_config(GOOD)
    with pytest.raises(ValidationError, match="frozen"):
        config.seed = 3


@pytest.mark.parametrize("text, path, words", [
    ("models: []", "models", "at least 1"),
    (GOOD + "colour: blue\n", "colour", "Extra inputs"),
    ("models:\n  - {name: g, generator: {kind: gaussian, temperature: -1}}\n", "models.0.generator.temperature", "greater than or equal"),
    ("models:\n  - {name: g, generator: {kind: gaussian, component: 3}}\n", "models.0.generator.component", "Extra inputs"),
    ("models:\n  - {name: g, generator: {kind: gan}}\n", "models.0.generator", "kind"),
    ("models:\n  - {name: 'bad name', generator: {kind: real}}\n", "models.0.name", "pattern"),
    ("models:\n  - {name: a, generator: {kind: real}}\n  - {name: a, generator: {kind: gaussian}}\n", "", "repeated: a"),
    ("classifier: {options: {widthz: [1, 2, 3]}}\n" + GOOD, "classifier", "options.widthz"),
    ("classifier: {options: {epochs: many}}\n" + GOOD, "classifier", "options.epochs"),
    ("classifier: {recipe: huge}\n" + GOOD, "classifier.recipe", "fast"),
    ("classifier: {device: gpu0}\n" + GOOD, "classifier.device", "gpu0"),
    ("store: {access_key_id: k}\n" + GOOD, "store", "both"),
    ("dataset: {kind: hf-parquet, name: c}\n" + GOOD, "dataset.train", "Field required"),
    ("models:\n  - {name: p, generator: {kind: python, entry_point: 'no colon'}}\n", "models.0.generator.entry_point", "pattern"),
    ("models:\n  - {name: real, generator: {kind: gaussian}}\n", "", "kept for the baseline"),
    ("models:\n  - {name: p, generator: {kind: python, entry_point: 'm:f', prompt_template: 'a photo'}}\n",
     "models.0.generator.prompt_template", "must contain {class_name}"),
    ("models:\n  - {name: p, generator: {kind: python, entry_point: 'm:f', prompt_template: '{class_name} by {artist}'}}\n",
     "models.0.generator.prompt_template", "unknown placeholder {artist}"),
    ("models:\n  - {name: p, generator: {kind: python, entry_point: 'm:f', prompt_template: 'a {} {class_name}'}}\n",
     "models.0.generator.prompt_template", "unknown placeholder {}"),
    ("models:\n  - {name: p, generator: {kind: python, entry_point: 'm:f', prompt_template: 'a {class_name'}}\n",
     "models.0.generator.prompt_template", "not a format string"),
])
def test_bad_config_names_the_key(text, path, words):
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="my.yaml")
    message = str(info.value)
    assert "my.yaml" in message
    assert f"my.yaml: {path}" in message or path == ""
    assert words in message


def test_not_yaml_and_not_a_mapping():
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_config("models: [", source="x.yaml")
    with pytest.raises(ConfigError, match="mapping"):
        parse_config("- 1\n- 2\n", source="x.yaml")


def test_secrets_do_not_show_in_repr():
    config = parse_config("store: {url: 's3://b/p', access_key_id: AKIDSECRET, secret_access_key: VERYSECRET}\n" + GOOD)
    assert "VERYSECRET" not in repr(config) and "AKIDSECRET" not in repr(config)
    assert config.store.secret_access_key.get_secret_value() == "VERYSECRET"


@pytest.mark.parametrize("text, words", [
    (GOOD + "models:\n  - {name: h, generator: {kind: real}}\n", "duplicate key 'models' at line 5 (first at line 2)"),
    ("models:\n  - name: g\n    generator: {kind: gaussian, components: 8, components: 4}\n",
     "duplicate key 'components' at line 3 (first at line 3)"),
    ("store: {url: a}\nstore: {url: b}\n" + GOOD, "duplicate key 'store' at line 2 (first at line 1)"),
])
def test_duplicate_keys_are_errors(text, words):
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="my.yaml")
    assert f"my.yaml: {words}" in str(info.value)


def test_merge_keys_override_without_being_duplicates():
    config = parse_config("models:\n  - {name: a, generator: &g {kind: gaussian, components: 8}}\n"
                          "  - {name: b, generator: {<<: *g, components: 4}}\n")
    assert [m.generator.components for m in config.models] == [8, 4]


def test_config_that_is_not_utf8_is_a_config_error():
    with pytest.raises(ConfigError, match=r"my.yaml: not UTF-8 text \(byte 0xe9 at line 1, offset 19\)"):
        parse_config("models: [{name: caf\xe9, generator: {kind: real}}]\n".encode("latin-1"), source="my.yaml")
    assert parse_config(GOOD.encode()).models[0].name == "g"


def test_yaml_aliases_cannot_expand_without_bound():
    import time

    # "billion laughs" in a Python generator's options, which validate as anything: before, the config
    # passed, and the samples fingerprint's JSON of them needed 2.7 GB and 20 s per 10^8 values
    laughs = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    laughs += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]  # 10^10 values once expanded
    text = "models:\n- name: p\n  generator:\n    kind: python\n    entry_point: m:f\n    options:\n"
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"my.yaml: more than 100000 values once YAML aliases are expanded"):
        parse_config(text + "".join(f"      {line}\n" for line in laughs), source="my.yaml")
    assert time.perf_counter() - started < 5
    with pytest.raises(ConfigError, match="my.yaml: nested too deeply"):
        parse_config("seed: " + "[" * 5000 + "]" * 5000 + "\n" + GOOD, source="my.yaml")


def test_without_credentials_leaves_the_rest_of_the_config():
    text = "store:\n  url: s3://b/p  # team store\n  access_key_id: AKIA1\n  secret_access_key: s3cr3t\n" + GOOD
    shared = without_credentials(text)
    assert "AKIA1" not in shared and "s3cr3t" not in shared
    config, again = parse_config(text), parse_config(shared)
    assert again.store.access_key_id is None and again.store.secret_access_key is None
    assert again.model_dump(exclude={"store"}) == config.model_dump(exclude={"store"}) and again.store.url == "s3://b/p"
    assert without_credentials(GOOD) == GOOD  # nothing to leave out: the same bytes
    with pytest.raises(ConfigError, match="night.yaml"):
        without_credentials("models: 3\n", "night.yaml")


def test_with_checkpoints_replaces_a_python_models_checkpoint_and_nothing_else():
    text = GOOD + "  - name: mine  # the trained model\n    generator: {kind: python, entry_point: 'm:f', checkpoint: old.pt}\n"
    assert with_checkpoints(text, {}) == text  # nothing to replace: the same bytes
    config, replaced = parse_config(text), parse_config(with_checkpoints(text, {"mine": "s3://b/ckpt/step-900.pt"}))
    assert replaced.models[1].generator.checkpoint == "s3://b/ckpt/step-900.pt"
    assert replaced.models[1].generator.model_dump(exclude={"checkpoint"}) == config.models[1].generator.model_dump(exclude={"checkpoint"})
    assert replaced.model_dump(exclude={"models"}) == config.model_dump(exclude={"models"}) and replaced.models[0] == config.models[0]
    with pytest.raises(ConfigError, match=r"night.yaml: checkpoint for model 'other': no such model \(the config has g, mine\)"):
        with_checkpoints(text, {"other": "a.pt"}, "night.yaml")
    with pytest.raises(ConfigError, match="checkpoint for model 'g': its generator is gaussian; only python generators"):
        with_checkpoints(text, {"g": "a.pt"})


# ---------------------------------------------------------------- series of checkpoints

SERIES = """
models:
  - name: ddpm
    generator: {kind: npz, path: "runs/%s"}
    series: %s
"""


def test_a_listed_series_becomes_one_model_per_checkpoint_in_step_order():
    from casflow.tasks.config import CheckpointConfig, expand_series, series_glob

    config = parse_config(SERIES % ("{a,b}/ckpt-{step}.npz", "{}"))
    model = config.models[0]
    assert series_glob(model) == "runs/{a,b}/ckpt-*.npz"
    listed = {"ddpm": ["runs/a/ckpt-2000.npz", "runs/b/ckpt-500.npz", "runs/a/ckpt-last.npz", "runs/a/ckpt-10.npz"]}
    expanded = expand_series(config, listed)
    checkpoints = [m for m in expanded.models]
    assert [m.name for m in checkpoints] == ["ddpm@10", "ddpm@500", "ddpm@2000"]  # ckpt-last is no step
    assert [m.generator.path for m in checkpoints] == ["runs/a/ckpt-10.npz", "runs/b/ckpt-500.npz", "runs/a/ckpt-2000.npz"]
    assert all(isinstance(m, CheckpointConfig) and m.series_name == "ddpm" for m in checkpoints)
    assert [m.step for m in checkpoints] == [10, 500, 2000]
    assert [m.name for m in expanded.all_models] == ["real", "ddpm@10", "ddpm@500", "ddpm@2000"]


def test_a_glob_pattern_matches_within_one_folder():
    from casflow.tasks.config import expand_series

    config = parse_config(SERIES % ("ckpt-*-{step}.npz", "{}"))
    listed = {"ddpm": ["runs/ckpt-ema-100.npz", "runs/ckpt-ema-x.npz", "runs/ckpt-200.npz"]}
    assert [m.name for m in expand_series(config, listed).models] == ["ddpm@100"]


def test_a_series_with_explicit_steps_needs_no_listing():
    from casflow.tasks.config import expand_series, series_glob

    config = parse_config(SERIES % ("ckpt-{step}.npz", "{steps: [300, 100]}"))
    assert series_glob(config.models[0]) is None
    expanded = expand_series(config, {})
    assert [(m.name, m.generator.path) for m in expanded.models] == [("ddpm@100", "runs/ckpt-100.npz"),
                                                                    ("ddpm@300", "runs/ckpt-300.npz")]


@pytest.mark.parametrize("path, series, problem", [
    ("ckpt.npz", "{}", "must contain {step} once"),
    ("ckpt-{step}-{step}.npz", "{}", "must contain {step} once"),
])
def test_a_series_pattern_without_one_step_field_is_an_error_naming_the_model(path, series, problem):
    with pytest.raises(ConfigError, match=r"models\.0.*model 'ddpm': series: generator\.path " + re.escape(problem)):
        parse_config(SERIES % (path, series))


def test_a_series_of_a_generator_without_files_is_an_error_naming_the_model():
    text = "models:\n  - {name: g, generator: {kind: gaussian}, series: {}}\n"
    with pytest.raises(ConfigError, match="model 'g': a series needs a generator that reads a file"):
        parse_config(text)


def test_a_series_without_checkpoints_or_with_two_of_one_step_is_an_error_naming_the_model():
    from casflow.tasks.config import expand_series

    config = parse_config(SERIES % ("{a,b}/ckpt-{step}.npz", "{}"))
    with pytest.raises(ConfigError, match=r"model 'ddpm': series: no checkpoint matches runs/\{a,b\}/ckpt-\{step\}\.npz"):
        expand_series(config, {"ddpm": ["runs/a/ckpt-final.npz"]})
    with pytest.raises(ConfigError, match="model 'ddpm': series: two checkpoints of step 5: runs/a/ckpt-5.npz and runs/b/ckpt-05.npz"):
        expand_series(config, {"ddpm": ["runs/a/ckpt-5.npz", "runs/b/ckpt-05.npz"]})


def test_a_racing_series_gives_its_checkpoints_the_seed_ranges_seeds_from_the_runs_seed():
    from casflow.tasks.config import expand_series

    config = parse_config(SERIES % ("ckpt-{step}.npz", "{steps: [100, 200], selection: race}")
                          + "seed: 7\nclassifier: {seeds: {min: 1, max: 4}}\n")
    expanded = expand_series(config, {})
    real, *checkpoints = expanded.all_models
    assert [m.race_max_seeds for m in checkpoints] == [4, 4]
    assert [expanded.race_seeds(m) for m in checkpoints] == [(7, 8, 9, 10)] * 2
    assert [expanded.first_seeds(m) for m in checkpoints] == [(7,)] * 2
    assert expanded.race_seeds(real) is None and expanded.first_seeds(real) == (7,)  # min 1
    plain = expand_series(parse_config(SERIES % ("ckpt-{step}.npz", "{steps: [100]}")), {})
    assert plain.race_seeds(plain.models[0]) is None


@pytest.mark.parametrize("series, classifier, problem", [
    ("{selection: race}", "", "selection race gives each checkpoint one classifier seed, then more to the contenders: "
                              "it needs classifier: {seeds: {min: 1, max: N}} (got seeds None)"),
    ("{selection: race}", "classifier: {seeds: [0, 1, 2]}\n", "it needs classifier: {seeds: {min: 1, max: N}}"),
    ("{selection: race}", "classifier: {seeds: {min: 2, max: 5}}\n", "(got seeds {'min': 2, 'max': 5})"),
    ("{selection: race, max_seeds: 5}", "", "max_seeds is gone: a race gives up to classifier.seeds' max, so write "
                                            "classifier: {seeds: {min: 1, max: 5}} instead"),
    ("{selection: best}", "", "'all' or 'race'"),
])
def test_a_race_without_a_seed_range_or_with_the_old_max_seeds_is_an_error_saying_what_to_write(series, classifier,
                                                                                                problem):
    with pytest.raises(ConfigError, match=re.escape(problem)):
        parse_config(SERIES % ("ckpt-{step}.npz", series) + classifier)
    if "needs" in problem or "(got" in problem:
        with pytest.raises(ConfigError, match="model 'ddpm': series: selection race"):
            parse_config(SERIES % ("ckpt-{step}.npz", series) + classifier)


@pytest.mark.parametrize("seeds, problem", [
    ("{min: 3, max: 2}", "classifier.seeds: Value error, min (3) must not exceed max (2)"),
    ("{min: 0, max: 2}", "classifier.seeds.min: Input should be greater than or equal to 1"),
    ("{min: 1}", "classifier.seeds.max: Field required"),
    ("{min: 1, max: 3, first: 2}", "classifier.seeds.first: Extra inputs are not permitted"),
    ("[]", "classifier.seeds: Value error, seeds: give at least one seed, or {min, max}"),
    ("[1, 1]", "seeds must be distinct"),
    ("3", "classifier.seeds: Input should be a valid list"),
])
def test_a_bad_seed_list_or_range_is_one_error_naming_the_form(seeds, problem):
    with pytest.raises(ConfigError, match=re.escape(problem)) as raised:
        parse_config(f"classifier: {{seeds: {seeds}}}\nmodels: [{{name: a, generator: {{kind: gaussian}}}}]\n")
    assert str(raised.value).count("classifier.seeds") == 1


def test_a_seed_range_starts_every_model_at_min_of_the_runs_seed_and_the_integers_after_it():
    config = parse_config("seed: 4\nclassifier: {seeds: {min: 2, max: 5}}\nmodels: [{name: a, generator: {kind: gaussian}}]\n")
    assert config.classifier_seeds == (4, 5, 6, 7, 8) and config.first_seeds(config.models[0]) == (4, 5)
    fixed = parse_config("classifier: {seeds: [9, 2]}\nmodels: [{name: a, generator: {kind: gaussian}}]\n")
    assert fixed.seed_range is None and fixed.first_seeds(fixed.models[0]) == fixed.classifier_seeds == (9, 2)


def test_the_seed_forms_share_the_recipe_fingerprint_and_the_classifiers_of_their_seeds():
    from casflow.flows.steps import classifier_inputs
    from casflow.storage.shards import ShardSet

    forms = ["", "classifier: {seeds: [0, 1, 2]}\n", "classifier: {seeds: {min: 1, max: 5}}\n"]
    configs = [parse_config(form + "models: [{name: a, generator: {kind: gaussian}}]\n") for form in forms]
    assert len({c.classifier.resolved.fingerprint for c in configs}) == 1
    samples = ShardSet(location="s", fingerprint="f", num_samples=100, count_per_class=(10,) * 10,
                       class_names=tuple("0123456789"), image_shape=(8, 8, 1), shards=(), manifest_sha256="m")
    assert len({json.dumps(classifier_inputs(c, samples, 10, seed=0), sort_keys=True) for c in configs}) == 1
