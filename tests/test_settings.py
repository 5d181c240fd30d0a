"""Tests for layerfusion.study.settings: a profile read into typed, frozen settings, validated at every depth."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from layerfusion.study import settings
from layerfusion.study.settings import ProfileError, StudyConfig

REPO = Path(__file__).resolve().parents[1]
SMALL = {
    "profile": "small", "seed": 0, "models": ["a", "b"], "datasets": ["sst2", "r8"], "validation_size": 0.2,
    "subsample": {"sst2": {"train": 96, "test": 64}}, "max_length": {"sst2": 48, "r8": 32},
    "probe": {"Cs": [0.1, 1.0], "max_iter": 50, "tol": 1e-3},
    "fusion": {"operators": ["concat", "sum"], "seeds": [0, 1], "epochs": 10, "greedy": {"top_layers": 2}},
    "overhead": {"n_texts": [4, 8], "token_budget": [256, 1024]},
}


def write(folder: Path, name: str, raw: dict | str) -> Path:
    path = folder / name
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return path


def test_shipped_profiles_load_and_record_as_json():
    assert {"ci", "default", "paper"} <= set(settings.available())
    for name in settings.available():
        cfg = StudyConfig.from_profile(name)
        assert cfg.profile == name and cfg.primary_pooling in cfg.poolings
        assert json.loads(json.dumps(cfg.as_dict()))["probe"]["Cs"] == list(cfg.probe.Cs)


def test_a_path_profile_reads_like_a_named_one_and_keeps_its_declared_name(tmp_path):
    cfg = StudyConfig.from_profile(write(tmp_path, "anything.yaml", SMALL))
    assert cfg.profile == "small"
    assert cfg.subsample["sst2"] == settings.Subsample(train=96, validation=None, test=64)
    assert cfg.subsample_of("r8") == settings.Subsample()
    assert cfg.fusion.greedy == settings.GreedySettings(top_layers=2, max_units=4)
    assert cfg.overhead.token_budget == (256, 1024) and cfg.overhead.max_length is None
    undeclared = {k: v for k, v in SMALL.items() if k != "profile"}
    assert StudyConfig.from_profile(str(write(tmp_path, "mine.yml", undeclared))).profile == "mine"


def test_settings_are_frozen_and_typed(tmp_path):
    cfg = StudyConfig.from_profile(write(tmp_path, "s.yaml", SMALL))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 1  # type: ignore[misc]
    assert cfg.models == ("a", "b") and cfg.probe.Cs == (0.1, 1.0) and isinstance(cfg.probe.Cs[0], float)
    assert cfg.probe.params() == {"Cs": (0.1, 1.0), "max_iter": 50, "tol": 1e-3}


@pytest.mark.parametrize("edit, where, allowed", [
    (lambda r: r["probe"].update(Cz=[1.0]), "probe.Cz", "['Cs', 'max_iter', 'tol']"),
    (lambda r: r["subsample"]["sst2"].update(trian=5), "subsample.sst2.trian", "['train', 'validation', 'test']"),
    (lambda r: r["fusion"]["greedy"].update(top=2), "fusion.greedy.top", "['top_layers', 'max_units', 'budget_dims']"),
    (lambda r: r["overhead"].update(batch_memory=[256]), "overhead.batch_memory", "'token_budget'"),
    (lambda r: r.update(sede=1), "sede", "'seed'"),
])
def test_an_unknown_key_at_any_depth_names_its_path_and_the_allowed_keys(tmp_path, edit, where, allowed):
    raw = json.loads(json.dumps(SMALL))
    edit(raw)
    path = write(tmp_path, "typo.yaml", raw)
    with pytest.raises(ProfileError) as err:
        StudyConfig.from_profile(path)
    message = str(err.value)
    assert message.startswith(f"profile 'small' ({path}): {where}: unknown setting; allowed keys here are [")
    assert allowed in message and "\n" not in message


@pytest.mark.parametrize("edit, expected", [
    (lambda r: r["subsample"].update(sst22={"train": 5}), r"subsample\.sst22: not one of the profile's datasets"),
    (lambda r: r["max_length"].update(sst2=0), r"max_length\.sst2: must be a positive number of tokens"),
    (lambda r: r["fusion"].update(seeds=[0, "x"]), r"fusion\.seeds\[1\]: expected an integer, got 'x'"),
    (lambda r: r["fusion"].update(operators=["concat", "mix"]), r"fusion\.operators: unknown operators \['mix'\]"),
    (lambda r: r.update(primary_pooling="max"), r"primary_pooling: 'max' is not one of poolings"),
    (lambda r: r.update(poolings=["mean", "last"]), r"authors_protocol\.pooling: 'mean_pad' is not one of poolings"),
    (lambda r: r.update(validation_size=1.5), r"validation_size: must lie strictly between 0 and 1"),
    (lambda r: r["probe"].update(Cs="0.1"), r"probe\.Cs: expected a list, got '0.1'"),
    (lambda r: r["probe"].update(max_iter=0), r"probe\.max_iter: must be positive"),
    (lambda r: r.pop("models"), r"missing required settings \['models'\]"),
    (lambda r: r.update(profile="../up"), r"profile: '../up' is not a usable name"),
    (lambda r: r.update(selection={"protocol": "loo"}), r"selection\.protocol: must be one of \['validation', 'cv'\]"),
    (lambda r: r.update(selection={"folds": 1}), r"selection\.folds: cross-validation needs at least 2 folds"),
    (lambda r: r.update(power={"discordance": {"sst2": 0.0}}), r"power\.discordance\.sst2: a discordance rate"),
    (lambda r: r.update(power={"discordance": {"sst3": 0.1}}), r"power\.discordance\.sst3: not one of the profile"),
    (lambda r: r.update(power={"discordance_grid": [0.1, 2]}), r"power\.discordance_grid\[1\]: a discordance"),
    (lambda r: r.update(power={"power": 1.0}), r"power\.power: must lie strictly between 0 and 1"),
    (lambda r: r.update(authors_protocol={"seeds": [1, 1]}), r"authors_protocol\.seeds: lists a seed twice"),
    (lambda r: r.update(executor={"kind": "slurm"}), r"executor\.kind: must be one of \['local', 'ray'\]"),
    (lambda r: r.update(executor={"kind": "local", "address": "auto"}),
     r"executor\.kind: address and workers apply to kind: ray only"),
    (lambda r: r.update(executor={"kind": "ray", "workers": 0}), r"executor\.workers: must be positive"),
    (lambda r: r.update(executor={"kind": "ray", "nodes": 2}), r"executor\.nodes: unknown setting"),
    (lambda r: r["overhead"].update(deploy_n_texts_by_dataset={"r8": 0}),
     r"overhead\.deploy_n_texts_by_dataset\.r8: must be a positive number of texts, got 0"),
    (lambda r: r["overhead"].update(deploy_n_texts_by_dataset={"r9": 8}),
     r"overhead\.deploy_n_texts_by_dataset\.r9: not one of the profile"),
])
def test_bad_values_are_refused_where_they_enter(tmp_path, edit, expected):
    raw = json.loads(json.dumps(SMALL))
    edit(raw)
    with pytest.raises(ProfileError, match=expected):
        StudyConfig.from_profile(write(tmp_path, "bad.yaml", raw))


def test_one_source_of_defaults_the_engines_own():
    """Knobs an engine class also has default to that class's default; the shipped profiles state theirs."""
    from layerfusion import extract, fusion, heads, probe

    own = probe.LayerwiseProbe()
    assert settings.ProbeSettings().params() == {"Cs": tuple(own.Cs), "max_iter": own.max_iter, "tol": own.tol}
    assert settings.AuthorsProtocol().epochs == heads.MLPHead().epochs
    classifier = fusion.FusionClassifier()
    assert (settings.FusionSettings().proj_dim, settings.FusionSettings().epochs) == (classifier.proj_dim,
                                                                                      classifier.epochs)
    bare = StudyConfig(profile="p", seed=0, models=("m",), datasets=("d",), validation_size=0.1)
    assert bare.token_budget == extract.ExtractionConfig().token_budget
    assert bare.extraction_config("d").max_length == extract.ExtractionConfig().max_length
    for name in settings.available():
        probe_block = yaml.safe_load((REPO / "params" / f"{name}.yaml").read_text())["probe"]
        assert set(probe_block) == {"Cs", "max_iter", "tol"}, f"params/{name}.yaml must state its probe settings"


def test_overrides_replace_top_level_settings_and_follow_datasets(tmp_path):
    path = write(tmp_path, "s.yaml", SMALL)
    cfg = StudyConfig.from_profile(path, models=["b"], datasets=None)
    assert cfg.models == ("b",) and cfg.datasets == ("sst2", "r8")
    narrowed = StudyConfig.from_profile(path, datasets=["r8"])
    assert narrowed.datasets == ("r8",) and narrowed.subsample == {} and narrowed.max_length == {"r8": 32}
    with pytest.raises(ProfileError, match=r"cache_dir: unknown setting"):
        StudyConfig.from_profile(path, cache_dir="/tmp")
    with pytest.raises(ProfileError, match="profile: may not be overridden"):
        StudyConfig.from_profile(path, profile="other")
    with pytest.raises(ProfileError, match=r"subsample\.mr2: not one of the profile's datasets"):
        StudyConfig.from_profile(path, subsample={"mr2": {"train": 4}})
    spare = StudyConfig.from_profile(path, subsample={"mr": {"train": 4}})  # kept for a datasets override
    assert spare.subsample["mr"].train == 4
    assert StudyConfig.from_profile(path, subsample={"mr": {"train": 4}}, datasets=["mr"]).subsample_of("mr").train == 4
    assert cfg.replace(seed=3).seed == 3 and cfg.replace(seed=3).probe == cfg.probe


def test_unknown_profiles_and_bad_files_are_named(tmp_path):
    with pytest.raises(KeyError, match=r"unknown profile 'huge'; available profiles in .*\['ci', 'default'"):
        StudyConfig.from_profile("huge")
    with pytest.raises(FileNotFoundError, match=r"profile file .*nope\.yaml does not exist; pass a profile name"):
        StudyConfig.from_profile(tmp_path / "nope.yaml")
    with pytest.raises(ProfileError, match=r"broken\.yaml: not valid YAML"):
        StudyConfig.from_profile(write(tmp_path, "broken.yaml", "seed: [1, 2\n"))
    with pytest.raises(ProfileError, match=r"list\.yaml: must hold a mapping of settings, got list"):
        StudyConfig.from_profile(write(tmp_path, "list.yaml", "- 1\n- 2\n"))
    assert settings.available(tmp_path) == ["broken", "list"]
    with pytest.raises(FileNotFoundError, match="profile folder .* does not exist; pass params_dir="):
        settings.available(tmp_path / "absent")


def test_a_named_profile_must_declare_its_own_name(tmp_path, monkeypatch):
    write(tmp_path, "renamed.yaml", {**SMALL, "profile": "other"})
    path = settings.locate("renamed", tmp_path)
    with pytest.raises(ProfileError, match="declares 'other'; make it 'renamed'"):
        settings.read(path, "renamed")
    assert settings.read(path)["profile"] == "other"


def test_shipped_profiles_plan_power_for_every_dataset_and_state_their_protocol():
    for name in settings.available():
        cfg = StudyConfig.from_profile(name)
        assert set(cfg.datasets) <= set(cfg.power.discordance), f"params/{name}.yaml: a planning rate per dataset"
        assert cfg.selection.protocol in settings.PROTOCOLS
    assert len(StudyConfig.from_profile("default").authors_protocol.seeds) >= 5


def test_the_executor_is_local_unless_a_profile_or_override_asks_for_ray(tmp_path):
    assert StudyConfig.from_profile("default").executor == settings.ExecutorSettings()
    ray = StudyConfig.from_profile("ci", executor={"kind": "ray", "address": "auto", "workers": 2}).executor
    assert (ray.kind, ray.address, ray.workers) == ("ray", "auto", 2)


def test_deploy_texts_per_dataset_fall_back_to_the_common_number(tmp_path):
    raw = json.loads(json.dumps(SMALL))
    raw["overhead"].update(deploy_n_texts=16, deploy_n_texts_by_dataset={"r8": 4})
    oh = StudyConfig.from_profile(write(tmp_path, "d.yaml", raw)).overhead
    assert (oh.deploy_texts("r8"), oh.deploy_texts("sst2")) == (4, 16)
