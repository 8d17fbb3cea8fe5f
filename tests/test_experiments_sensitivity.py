"""The sensitivity study: cells, ratios and the goal on hand-computed runs, and the command end to end."""

import json
import math

import numpy as np
import pytest
import torch

from experiments.benchmark import beta_sensitivity as study
from experiments.__main__ import main
from experiments.benchmark.beta_sensitivity_report import cell_ratio, goal_table
from experiments.core.workloads import WORKLOADS
from tests.test_experiments_data import write_idx_dataset
from tests.test_experiments_benchmark import _sha256, _write_tables


def _run(method, alpha0, loss, factor=None, workload="w"):
    return {"workload": workload, "method": method, "alpha0": alpha0, "factor": factor,
            "beta": None if factor is None else factor * 1e-3, "final_loss": loss}


def test_cells_divide_by_the_base_best_with_ties_and_divergence():
    runs = [_run("sgdn", 1e-5, 4.0), _run("sgdn", 1e-3, 2.0), _run("sgdn", 1e-1, 2.0),  # a tie at the best
            _run("sgdn", 1.0, None),  # diverged base runs do not count
            _run("sgdn_hd", 1e-5, 2.5, 1.0), _run("sgdn_hd", 1e-3, 1.0, 1.0), _run("sgdn_hd", 1e-1, None, 1.0),
            _run("sgdn_hd", 1e-6, 100.0, 1.0),  # outside the goal's range
            _run("sgdn_hd", 1e-5, 8.0, 10.0), _run("sgdn_hd_sf", 1e-5, 2.4, 1.0), _run("sgdn_hd_sf", 1e-1, 2.5, 1.0)]
    cells = study.cells(runs)
    ratios = {(c["method"], c["alpha0"], c["factor"]): c["ratio"] for c in cells}
    assert ratios == {("sgdn_hd", 1e-5, 1.0): 1.25, ("sgdn_hd", 1e-3, 1.0): 0.5, ("sgdn_hd", 1e-1, 1.0): math.inf,
                      ("sgdn_hd", 1e-6, 1.0): 50.0, ("sgdn_hd", 1e-5, 10.0): 4.0, ("sgdn_hd_sf", 1e-5, 1.0): 1.2,
                      ("sgdn_hd_sf", 1e-1, 1.0): 1.25}
    assert {c["base_best"] for c in cells} == {2.0} and {c["base"] for c in cells} == {"sgdn"}
    rows = {r["method"]: r for r in study.goal_rows(cells)}
    # Diverged inside the range: worst inf, fails; 1.25 exactly is within; the beta x10 cell and alpha_0 1e-6 do not count.
    assert rows["sgdn_hd"] == {"workload": "w", "method": "sgdn_hd", "worst_ratio": math.inf,
                               "worst_alpha0": 1e-1, "meets": False}
    assert rows["sgdn_hd_sf"]["worst_ratio"] == 1.25 and rows["sgdn_hd_sf"]["worst_alpha0"] == 1e-1
    assert rows["sgdn_hd_sf"]["meets"] is True


def test_a_base_that_diverges_everywhere_leaves_no_reference():
    runs = [_run("adam", 1e-3, None), _run("adam", 1e-1, math.inf),
            _run("adam_hd", 1e-3, 0.3, 1.0), _run("adam_hd", 1e-1, None, 1.0)]
    cells = study.cells(runs)
    assert all(math.isnan(c["ratio"]) and math.isinf(c["base_best"]) for c in cells)
    (row,) = study.goal_rows(cells)
    assert math.isnan(row["worst_ratio"]) and row["meets"] is None and row["worst_alpha0"] is None
    # As read back from JSON (NaN and inf are null) the two cases stay apart.
    assert math.isnan(cell_ratio({"ratio": None, "base_best": None}))
    assert cell_ratio({"ratio": None, "base_best": 2.0}) == math.inf


def test_the_grids_match_the_issue():
    assert study.ALPHA0S["full"] == tuple(10.0 ** k for k in range(-6, 1))
    assert set(study.ALPHA0S["quick"]) == {1e-5, 1e-4, 1e-3, 1e-2, 1e-1}
    assert study.BETA_FACTORS["full"] == pytest.approx([10 ** (k / 2) for k in range(-3, 4)])
    assert 1.0 in study.BETA_FACTORS["quick"] and 1.0 in study.BETA_FACTORS["full"]
    assert study.default_beta("sgdn_hd_sf") == study.default_beta("adam_hd_sf") == 0.05
    jobs = study.jobs_for(["mlp_diabetes"], "quick")
    assert study.default_beta("sgdn_hd_bracket") == study.default_beta("muon_hd") == 0.05
    methods = sum(len(hd) for hd in study.BASES.values())
    assert len(jobs) == len(set(jobs)) == len(study.BASES) * 5 + methods * 5 * len(study.BETA_FACTORS["quick"])


@pytest.fixture
def one_thread():
    """Tiny models train much faster on one thread, above all on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def data_dir(tmp_path):
    rng = np.random.default_rng(0)
    write_idx_dataset(tmp_path, rng, n_train=40, n_valid=10)
    _write_tables(tmp_path, rng)
    return tmp_path


def test_quick_only_one_workload_end_to_end(data_dir, tmp_path, capsys, monkeypatch, one_thread):
    monkeypatch.setitem(study.ALPHA0S, "quick", (1e-2, 10.0))
    monkeypatch.setitem(study.BETA_FACTORS, "quick", (1.0, 100.0))
    monkeypatch.setattr(study, "BASES", {"sgdn": ("sgdn_hd", "sgdn_hd_sf"), "adam": ("adam_hd", "adam_hd_sf"),
                                         "muon": ("muon_hd",)})
    out = tmp_path / "out"
    argv = ["sensitivity", "--quick", "--out", str(out), "--only", "fullbatch_breast_cancer", "--bases", "sgdn,adam",
            "--data-dir", str(data_dir)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    runs_count = 2 * 2 + 4 * 2 * 2
    assert f"[{runs_count}/{runs_count}" in printed and "| workload | method | worst ratio" in printed
    for name in ("sensitivity.json", "sensitivity.md", "sensitivity_heatmap.png", "sensitivity_heatmap.pdf"):
        assert (out / name).is_file()
    record = json.loads((out / "sensitivity.json").read_text())
    workload = record["workloads"]["fullbatch_breast_cancer"]
    assert workload["sha256"] == _sha256(data_dir / "breast_cancer.csv")
    assert workload["steps"] == WORKLOADS["fullbatch_breast_cancer"].steps["quick"]
    assert len(record["runs"]) == runs_count and len(record["cells"]) == 4 * 2 * 2
    # The cells, recomputed from the runs (null: diverged).
    best = {b: min(math.inf if r["final_loss"] is None else r["final_loss"] for r in record["runs"]
                   if r["method"] == b) for b in ("sgdn", "adam")}
    assert list(workload["bases"]) == ["sgdn", "adam"]  # --bases chose them
    for cell in record["cells"]:
        (run,) = [r for r in record["runs"] if (r["method"], r["alpha0"], r["factor"]) ==
                  (cell["method"], cell["alpha0"], cell["factor"])]
        loss = math.inf if run["final_loss"] is None else run["final_loss"]
        assert cell_ratio(cell) == pytest.approx(loss / best[cell["base"]])
        assert run["beta"] == pytest.approx(cell["factor"] * study.default_beta(cell["method"]))
    assert [r["method"] for r in record["goal_rows"]] == ["sgdn_hd", "sgdn_hd_sf", "adam_hd", "adam_hd_sf"]
    markdown = (out / "sensitivity.md").read_text()
    assert goal_table(record) in markdown and "## fullbatch_breast_cancer" in markdown
    # A second call trains nothing and writes the same record.
    assert main(argv) == 0
    assert json.loads((out / "sensitivity.json").read_text())["cells"] == record["cells"]


def test_bases_selects_the_bases_and_their_hd_methods(capsys):
    jobs = study.jobs_for(["mlp_diabetes"], "quick", ["muon"])
    assert {job.method for job in jobs} == {"muon", *study.BASES["muon"]}
    assert len(jobs) == 5 + len(study.BASES["muon"]) * 5 * len(study.BETA_FACTORS["quick"])
    with pytest.raises(SystemExit) as exit_info:
        main(["sensitivity", "--quick", "--bases", "muon,nope"])
    assert exit_info.value.code == 2 and "--bases" in capsys.readouterr().err
