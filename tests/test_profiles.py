"""Tests for layerfusion.study.profiles: listing and reading params/<name>.yaml, overrides, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerfusion.study import profiles

SMALL = """\
profile: small
seed: 0
datasets: [sst2, r8]
subsample:
  sst2: {train: 96, test: 64}
fusion: {epochs: 10, seeds: [0, 1]}
"""


@pytest.fixture
def params(tmp_path: Path) -> Path:
    (tmp_path / "small.yaml").write_text(SMALL)
    (tmp_path / "big.yaml").write_text("seed: 1\ndatasets: [mr]\n")
    (tmp_path / "notes.txt").write_text("not a profile")
    return tmp_path


def test_available_lists_yaml_stems(params):
    assert profiles.available(params) == ["big", "small"]


def test_load_reads_the_file_and_fills_profile(params):
    small = profiles.load("small", params)
    assert small["datasets"] == ["sst2", "r8"] and small["subsample"]["sst2"] == {"train": 96, "test": 64}
    assert profiles.load("big", params)["profile"] == "big"


def test_load_returns_a_fresh_dict(params):
    profiles.load("small", params)["fusion"]["epochs"] = 999
    assert profiles.load("small", params)["fusion"]["epochs"] == 10


def test_overrides_deep_merge_and_dotted_keys(params):
    cfg = profiles.load("small", params, overrides={"fusion.epochs": 2, "subsample": {"sst2": {"train": 8}},
                                                    "seed": 5})
    assert cfg["fusion"] == {"epochs": 2, "seeds": [0, 1]}
    assert cfg["subsample"]["sst2"] == {"train": 8, "test": 64}
    assert cfg["seed"] == 5


def test_overrides_reject_unknown_keys_and_profile_changes(params):
    with pytest.raises(ValueError, match=r"unknown keys \['sede'\]; known keys are"):
        profiles.load("small", params, overrides={"sede": 1})
    with pytest.raises(ValueError, match="may not change 'profile'"):
        profiles.load("small", params, overrides={"profile": "big"})


def test_unknown_profile_lists_available(params):
    with pytest.raises(KeyError, match=r"unknown profile 'huge'; available profiles in .*\['big', 'small'\]"):
        profiles.load("huge", params)
    with pytest.raises(KeyError, match="unknown profile"):
        profiles.load("../small", params)


def test_bad_files_are_named(params):
    (params / "broken.yaml").write_text("seed: [1, 2\n")
    with pytest.raises(ValueError, match=r"broken.yaml is not valid YAML"):
        profiles.load("broken", params)
    (params / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match=r"list.yaml must hold a mapping of settings, got list"):
        profiles.load("list", params)
    (params / "renamed.yaml").write_text("profile: other\n")
    with pytest.raises(ValueError, match="declares profile: 'other'; make it 'renamed'"):
        profiles.load("renamed", params)


def test_missing_params_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="profile folder .* does not exist; pass params_dir="):
        profiles.available(tmp_path / "nope")


def test_repo_profiles_load():
    names = profiles.available()
    assert {"ci", "default", "paper"} <= set(names)
    for name in names:
        cfg = profiles.load(name)
        assert cfg["profile"] == name and isinstance(cfg["seed"], int)
