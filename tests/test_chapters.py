"""Chapters are derived, not registered: notebooks/NN_<name>.ipynb <-> layerfusion.study.chapters.<name> <-> _toc.yml;
and the chapters' shared pieces (opening, saving, gluing, the greedy search, fusion jobs) on tiny models."""

from __future__ import annotations

import importlib
import json
import pkgutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from layerfusion.study import chapters, cli, report

REPO = Path(__file__).resolve().parents[1]
PLUMBING = ("open_chapter(", ".save(", "save_tables(", ".glue(", ".finish(")


def code_cells(stem: str) -> list[dict]:
    cells = json.loads((REPO / "notebooks" / f"{stem}.ipynb").read_text())["cells"]
    return [c for c in cells if c["cell_type"] == "code" and "parameters" not in c["metadata"].get("tags", [])]


def test_every_notebook_has_its_chapter_module_and_toc_line_and_nothing_else_is_registered():
    found = chapters.notebooks()
    assert list(found) == sorted(found) and len(found) >= 6
    modules = {m.name for m in pkgutil.iter_modules(chapters.__path__)}
    assert modules == set(found.values()), "every chapters/<name>.py needs notebooks/NN_<name>.ipynb and back"
    toc = (REPO / "_toc.yml").read_text()
    for stem, name in found.items():
        importlib.import_module(f"layerfusion.study.chapters.{name}")
        assert f"file: book/executed/{stem}\n" in toc, f"_toc.yml has no line for {stem}"
        first = "".join(code_cells(stem)[0]["source"])
        assert f"report.open_chapter({name!r}, profile," in first, f"{stem}: the first cell opens chapter {name!r}"
    assert cli.build_parser().parse_args(["report"]).chapter is None


def test_plumbing_cells_are_hidden_in_the_book():
    for stem in chapters.notebooks():
        for cell in code_cells(stem):
            source = "".join(cell["source"])
            if any(call in source for call in PLUMBING):
                tags = cell["metadata"].get("tags", [])
                assert {"hide-input", "remove-cell"} & set(tags), f"{stem}: tag this cell hide-input: {source!r}"
            assert "for " not in source and "if " not in source, f"{stem}: a loop or an if belongs in the library"


def test_chapter_saves_tables_and_glues_facts(tmp_path, monkeypatch):
    glued = {}
    monkeypatch.setattr(report, "glue", lambda name, value, fmt=None: glued.setdefault(
        name, format(value, fmt) if fmt else value))
    chapter = report.open_chapter("unit", "ci", results_dir=tmp_path)
    assert chapter.config.profile == "ci" and glued == {"unit_run_id": chapter.run.run_id}
    assert chapter.run.info["profile_file"].endswith("params/ci.yaml")
    table = pd.DataFrame({"x": [1, 2]})
    assert chapter.save("one", table) is table
    assert chapter.save_tables({"a": table, "b": table}, prefix="unit") == ["unit_a", "unit_b"]
    assert chapter.load("unit_b")["x"].tolist() == [1, 2]
    shown = chapter.glue({"n": 1234, "r2": 0.98765}, prefix="unit", formats={"n": ",d"})
    assert shown == {"n": "1,234", "r2": 0.98765} and glued["unit_n"] == "1,234"
    assert chapter.card.loc["profile", "value"] == "ci"
    chapter.finish()
    assert sorted(p.stem for p in (tmp_path / "ci").glob("*.json")) == ["one", "runtime_unit", "unit_a", "unit_b"]


def test_a_path_profile_writes_under_its_declared_name(tmp_path, monkeypatch):
    raw = yaml.safe_load((REPO / "params" / "ci.yaml").read_text())
    path = tmp_path / "elsewhere" / "my_profile.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump({**raw, "profile": "mine"}))
    monkeypatch.setattr(report, "glue", lambda *a, **k: None)
    chapter = report.open_chapter("unit", str(path), results_dir=tmp_path / "results")
    assert chapter.run.results_dir == tmp_path / "results" / "mine"


def test_fusion_jobs_an_operator_cannot_take_are_skipped_with_its_reason():
    from layerfusion.study.chapters import fusion as fusion_chapter

    jobs, skipped = fusion_chapter.plan_jobs(["a", "b", "c"], ("concat", "scalar_mix"), {"a": 8, "b": 8, "c": 4})
    assert jobs[:3] == [(("a",), "concat"), (("b",), "concat"), (("c",), "concat")]
    assert (("a", "b"), "scalar_mix") in jobs and (("a", "b", "c"), "concat") in jobs
    assert [(s["models"], s["operator"]) for s in skipped] == [(["a", "c"], "scalar_mix"), (["b", "c"], "scalar_mix"),
                                                               (["a", "b", "c"], "scalar_mix")]
    assert "needs inputs of one dimension, got dims [8, 4]" in skipped[0]["reason"]


@pytest.fixture()
def tiny_study(tmp_path, monkeypatch):
    """A study over two tiny random decoders of different widths on a small slice of SST-2."""
    import dataclasses

    from layerfusion import models, testing
    from layerfusion.study import Study, StudyConfig

    keys = []
    for arch, hidden in (("llama", 32), ("gpt2", 16)):
        spec = testing.tiny_spec(tmp_path / arch, arch=arch, hidden=hidden)
        models.register(dataclasses.replace(spec, key=f"tiny-{arch}-chapters"), overwrite=True)
        keys.append(f"tiny-{arch}-chapters")
    sizes = {"train": 24, "validation": 12, "test": 12}
    cfg = StudyConfig.from_profile("ci", models=keys, datasets=["sst2"], poolings=["mean", "mean_pad"],
                                   subsample={"sst2": sizes}, max_length={"sst2": 16})
    cfg = cfg.replace(authors_protocol={"epochs": 2, "pooling": "mean_pad"},
                      fusion={"operators": ["concat", "scalar_mix"], "seeds": [0], "proj_dim": 8, "epochs": 2,
                              "greedy": {"top_layers": 2, "max_units": 2}},
                      greedy={"top_layers": 2, "max_units": 2})
    return Study(cfg, cache_dir=str(tmp_path / "cache"), progress=False)


def test_fusion_chapter_runs_with_an_operator_that_needs_equal_widths(tiny_study):
    from layerfusion.study.chapters import fusion as fusion_chapter
    from layerfusion.study.chapters import layer_analysis

    layers = layer_analysis.analyse_layers(tiny_study)
    assert set(layers.summary["pooling"]) == {"mean", "mean_pad"}
    assert set(layers.greedy["model"]) == set(tiny_study.config.models)
    fused = fusion_chapter.analyse_fusion(tiny_study, layers.summary, layers.per_layer)
    assert list(fused.skipped.columns) == list(fusion_chapter.SKIPPED_COLUMNS)
    assert fused.skipped[["dataset", "operator"]].values.tolist() == [["sst2", "scalar_mix"]]
    assert set(fused.runs["operator"]) == {"concat"} and "scalar_mix" not in set(fused.comparisons["operator"])
    from layerfusion.study.verdicts import Levels
    assert fusion_chapter.headline(fused, Levels.of(tiny_study.config))["n_skipped"] == 1
    chosen = fused.greedy.dropna(subset=["chosen_test_accuracy"])
    assert len(chosen) == 1 and all("@" in unit for units in fused.greedy["units"] for unit in units)
    assert list(fused.greedy["cost"].iloc[:1]) in ([32.0], [16.0])


def test_cli_takes_a_profile_path_and_refuses_a_typo_at_depth(tmp_path, capsys):
    raw = yaml.safe_load((REPO / "params" / "ci.yaml").read_text())
    good = tmp_path / "mine.yaml"
    good.write_text(yaml.safe_dump({**raw, "profile": "mine"}))
    args = cli.build_parser().parse_args(["extract", "--profile", str(good), "--model", "minilm-l6", "--quiet"])
    study = cli._study(args)
    assert study.config.profile == "mine" and study.config.models == ("minilm-l6",)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**raw, "probe": {**raw["probe"], "Cz": [1.0]}}))
    assert cli.main(["probe", "--profile", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"layerfusion: error: profile 'ci' ({bad}): probe.Cz: unknown setting; allowed keys here")
    assert err.count("\n") == 1
