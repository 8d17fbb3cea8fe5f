"""The benchmark: each workload's loader and model on small files written here, and the command end to end."""

import gzip
import hashlib
import json
import math

import numpy as np
import pytest
import torch

from experiments.benchmark import scoring, selftuning as benchmark
from experiments.__main__ import main
from experiments.core.datasets import DatasetFileError, DatasetNotFoundError
from experiments.core.methods import untuned_settings
from experiments.core.runs import train
from experiments.core.workloads import CONTEXT, WORKLOADS, load_workload_data, suite
from tests.test_experiments_data import write_idx_dataset


def _write_tables(directory, rng):
    """Small stand-ins in the packaged files' formats: text, diabetes, breast cancer."""
    (directory / "fortunes").mkdir(parents=True)
    for name in ("a", "b"):
        words = rng.choice(["the", "cat", "sat", "on", "a", "mat", "%\n"], 600)
        (directory / "fortunes" / name).write_text(" ".join(words))
    (directory / "fortunes" / "a.dat").write_bytes(b"\x00\x01 index, not text")
    features = rng.integers(20, 80, (40, 10)).astype(float)
    targets = rng.uniform(25, 346, 40)
    for name, table in (("diabetes_data_raw.csv.gz", features), ("diabetes_target.csv.gz", targets)):
        with gzip.open(directory / name, "wt") as stream:
            np.savetxt(stream, table)
    rows = np.hstack([rng.normal(size=(50, 30)), rng.integers(0, 2, (50, 1))])
    with open(directory / "breast_cancer.csv", "w") as stream:
        stream.write("50,30,malignant,benign\n")
        np.savetxt(stream, rows, delimiter=",")
    return features, targets


@pytest.fixture
def data_dir(tmp_path):
    rng = np.random.default_rng(0)
    write_idx_dataset(tmp_path, rng, n_train=40, n_valid=10)
    tables = _write_tables(tmp_path, rng)
    return tmp_path, tables


def _sha256(*paths):
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.mark.parametrize("name", suite("benchmark"))
def test_each_workload_loads_its_files_and_trains(data_dir, name):
    directory, _ = data_dir
    workload = WORKLOADS[name]
    data = load_workload_data(workload, "quick", str(directory))
    assert len(data.source.sha256) == 64 and data.source.kind
    torch.manual_seed(0)
    model = workload.model(data, "quick")
    if workload.kind == "language":
        assert data.valid_x.shape == (workload.valid_size["quick"], CONTEXT["quick"] + 1)
        assert model(data.valid_x[:2, :-1]).shape == (2, CONTEXT["quick"], 256)
    else:
        assert model(data.valid_x[:3]).shape[0] == 3
    result = train(workload, data, "quick", "adamw", untuned_settings("adamw", False), seed=1, steps=3)
    assert result["steps"] == [3] and not result["diverged"] and math.isfinite(result["final_metric"])
    assert result == train(workload, data, "quick", "adamw", untuned_settings("adamw", False), seed=1, steps=3) \
        | {"time_s": result["time_s"]}


def test_tables_keep_raw_targets_and_hash_the_files_read(data_dir):
    directory, (features, targets) = data_dir
    diabetes = load_workload_data(WORKLOADS["mlp_diabetes"], "quick", str(directory))
    every = torch.cat([diabetes.train_y, diabetes.valid_y]).flatten().sort().values
    assert torch.allclose(every, torch.tensor(np.sort(targets), dtype=torch.float32))
    assert abs(float(diabetes.train_x.mean())) < 0.5 and len(diabetes.valid_y) == 8
    assert diabetes.source.sha256 == _sha256(directory / "diabetes_data_raw.csv.gz", directory / "diabetes_target.csv.gz")
    cancer = load_workload_data(WORKLOADS["fullbatch_breast_cancer"], "quick", str(directory))
    assert cancer.train_x.shape == (50, 11) and torch.equal(cancer.train_x[:, -1], torch.ones(50))
    assert cancer.train_x is cancer.valid_x
    text = load_workload_data(WORKLOADS["transformer_fortunes"], "quick", str(directory))
    assert text.source.sha256 == _sha256(directory / "fortunes" / "a", directory / "fortunes" / "b")
    assert int(text.train_x.max()) < 128


def test_missing_or_broken_files_are_named(tmp_path):
    from experiments.core.tables import load_breast_cancer, load_text_corpus

    with pytest.raises(DatasetNotFoundError, match="no text files"):
        load_text_corpus(tmp_path)
    (tmp_path / "broken.csv").write_text("1,2\nnot,numbers\n")
    with pytest.raises(DatasetFileError, match="broken.csv"):
        load_breast_cancer(tmp_path / "broken.csv")


def test_quick_only_one_workload_end_to_end(data_dir, tmp_path, capsys):
    directory, _ = data_dir
    out = tmp_path / "out"
    argv = ["benchmark", "--quick", "--out", str(out), "--only", "fullbatch_breast_cancer",
            "--entries", "adamw,adam_hd", "--data-dir", str(directory), "--jobs", "1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| rank | entry |" in printed and "[9/9" in printed
    for name in ("benchmark.json", "benchmark.md", "performance_profile.png", "curves.png"):
        assert (out / name).is_file()
    record = json.loads((out / "benchmark.json").read_text())
    assert set(record) == {"mode", "settings", "workloads", "runs", "scores", "time_scores"}
    assert record["settings"] == "untuned"
    workload = record["workloads"]["fullbatch_breast_cancer"]
    assert set(workload) == {"metric", "goal", "target", "budget_steps", "source", "sha256"}
    assert workload["budget_steps"] == 2 * WORKLOADS["fullbatch_breast_cancer"].steps["quick"]
    assert workload["sha256"] == _sha256(directory / "breast_cancer.csv")
    assert len(record["runs"]) == 2 * len(benchmark.SEEDS["quick"])
    # The scores, recomputed from the runs by the formula alone.
    for key, scores in (("steps_to_target", "scores"), ("time_to_target_s", "time_scores")):
        times = {}
        for run in record["runs"]:
            times.setdefault(run["entry"], {}).setdefault(run["workload"], []).append(run[key])
        medians = {e: {w: sorted(math.inf if v is None else v for v in values)[len(values) // 2]
                       for w, values in per.items()} for e, per in times.items()}
        assert scoring.scores(medians) == pytest.approx(record[scores])
    # A second call reuses every run.
    assert main(argv) == 0
    assert json.loads((out / "benchmark.json").read_text())["runs"] == record["runs"]


@pytest.mark.parametrize("command", ["benchmark", "sensitivity", "compose"])
def test_bad_names_exit_with_a_message(tmp_path, capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--quick", "--out", str(tmp_path), "--only", "imagenet"])
    assert exit_info.value.code == 2 and "--only" in capsys.readouterr().err
    if command != "benchmark":
        return
    with pytest.raises(SystemExit):
        main(["benchmark", "--quick", "--out", str(tmp_path), "--entries", "adam,adam"])
    assert "--entries" in capsys.readouterr().err


def test_compose_reuses_the_target_setting_runs(data_dir, tmp_path, capsys):
    """``compose`` in the benchmark's folder: AdamW's runs are the target-setting runs (read from
    the cache, so the best of them is the benchmark's target), the HD ones run under the same
    warmup + cosine."""
    directory, _ = data_dir
    out = tmp_path / "out"
    common = ["--quick", "--out", str(out), "--only", "fullbatch_breast_cancer", "--data-dir", str(directory)]
    assert main(["benchmark", *common, "--entries", "adamw"]) == 0
    cached = set((out / "runs").iterdir())
    assert main(["compose", *common]) == 0
    assert "| adamw_hd_sf |" in capsys.readouterr().out
    new = set((out / "runs").iterdir()) - cached
    assert len(new) == 2 * len(benchmark.TARGET_LRS)  # the HD runs only
    record = json.loads((out / "compose.json").read_text())
    assert record["methods"] == ["adamw", "adamw_hd_sf", "adamw_hd"] and record["lrs"] == list(benchmark.TARGET_LRS)
    assert len(record["runs"]) == 3 * len(benchmark.TARGET_LRS)
    adamw = [run["final_metric"] for run in record["runs"] if run["method"] == "adamw"]
    target = json.loads((out / "benchmark.json").read_text())["workloads"]["fullbatch_breast_cancer"]["target"]
    assert min(adamw) == target
    for name in ("compose.md", "compose.png", "compose.pdf"):
        assert (out / name).is_file()
    with pytest.raises(SystemExit) as exit_info:
        main(["compose", "--quick", "--out", str(tmp_path), "--only", "imagenet"])
    assert exit_info.value.code == 2 and "--only" in capsys.readouterr().err


def test_time_per_step_column_is_a_dash_without_adamw_and_a_ratio_with_it():
    from experiments.benchmark.selftuning_report import score_table

    record = {"scores": {"adam_hd": 1.0, "adamw": 0.5}, "time_scores": {"adam_hd": 1.0, "adamw": 0.5}}
    curve = {"steps": [10], "time_s": [2.0]}
    with_adamw = {("w", "adam_hd", 1): curve, ("w", "adamw", 1): {"steps": [10], "time_s": [1.0]}}
    assert score_table(record, with_adamw).splitlines()[2].endswith("| 2.00x |")
    without = {("w", "adam_hd", 1): curve}
    rows = score_table({"scores": {"adam_hd": 1.0}, "time_scores": {"adam_hd": 1.0}}, without).splitlines()
    assert rows[2].endswith("| - |") and "nan" not in rows[2]


def test_time_per_step_per_workload_is_the_median_over_seeds_on_that_workload():
    from experiments.benchmark.selftuning_report import step_cost_table

    record = {"workloads": {"a": {}, "b": {}}, "scores": {"adam_hd": 1.0, "adamw": 0.5}}
    curves = {("a", "adamw", seed): {"steps": [10], "time_s": [1.0]} for seed in (1, 2, 3)}
    curves.update({("a", "adam_hd", seed): {"steps": [10], "time_s": [t]} for seed, t in ((1, 1.0), (2, 3.0), (3, 2.0))})
    curves[("b", "adam_hd", 1)] = {"steps": [10], "time_s": [1.0]}  # no AdamW on b
    rows = step_cost_table(record, curves).splitlines()
    assert rows[0] == "| entry | a | b |"
    assert rows[2] == "| adam_hd | 2.00x | - |" and rows[3] == "| adamw | 1.00x | - |"
