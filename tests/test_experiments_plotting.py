"""The shared plot style (experiments.core.plotting) and the one atomic writer and file formats
(experiments.core.files)."""

from __future__ import annotations

import os
import stat

import matplotlib.pyplot as plt
import numpy as np
import pytest

from experiments.core import files, plotting
from experiments.core.plotting import method_style, save_figure

REGISTRY_NAMES = ["sgd", "sgdm", "sgdn", "adagrad", "rmsprop", "adam", "adamw"]


@pytest.mark.parametrize("base", REGISTRY_NAMES)
def test_hd_solid_and_base_dashed_in_the_same_colour(base):
    base_style, hd_style = method_style(base), method_style(base + "_hd")
    assert base_style.color == hd_style.color
    assert (base_style.linestyle, hd_style.linestyle) == ("--", "-")
    assert method_style(base + "_cosine").linestyle == ":" and method_style(base + "_cosine").color == base_style.color


def test_every_family_and_peer_has_its_own_colour_and_unknown_names_fail():
    names = REGISTRY_NAMES + ["prodigy", "dadapt_adam", "schedulefree_adamw", "dog"]
    colours = [method_style(name).color for name in names]
    assert len(set(colours)) == len(colours)
    assert method_style("schedulefree_adamw").label == "Schedule-Free AdamW"  # not read as "schedulefree" + suffix
    with pytest.raises(ValueError, match="lbfgs"):
        method_style("lbfgs")
    with pytest.raises(TypeError):
        method_style(3)


def test_save_figure_writes_png_and_pdf_and_nothing_on_failure(tmp_path, monkeypatch):
    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4], label="line")
    plotting.legend_outside(ax)
    png, pdf = save_figure(fig, tmp_path / "figure")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:5] == b"%PDF-"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figure.pdf", "figure.png"]

    original = fig.savefig

    def fail_on_pdf(name, format, **kwargs):
        if format == "pdf":
            raise RuntimeError("disk full")
        original(name, format=format, **kwargs)

    monkeypatch.setattr(fig, "savefig", fail_on_pdf)
    with pytest.raises(RuntimeError, match="disk full"):
        save_figure(fig, tmp_path / "broken")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figure.pdf", "figure.png"]
    with pytest.raises(ValueError, match="extension"):
        save_figure(fig, tmp_path / "figure.png")


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "x.csv"
    files.write_csv(path, ("a",), [[1.0]])

    class Unprintable:
        def __str__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        files.write_csv(path, ("a",), [[2.0], [Unprintable()]])
    assert path.read_text().splitlines() == ["a", "1.0"]
    assert [p.name for p in tmp_path.iterdir()] == ["x.csv"]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_files_get_the_mode_the_umask_gives(tmp_path, umask):
    previous = os.umask(umask)
    try:
        written = [files.write_text(tmp_path / "a.md", "text"), files.write_json(tmp_path / "b.json", {"x": 1})]
        fig, ax = plt.subplots()
        written += save_figure(fig, tmp_path / "figure")
        plt.close(fig)
        written.append(plotting.save_gif([np.zeros((4, 4, 3), dtype=np.uint8)], tmp_path / "c.gif", fps=5))
    finally:
        os.umask(previous)
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


def test_csv_and_json_round_trip_in_full_precision(tmp_path):
    values = [0.1, 1 / 3, float("nan"), 1e-300]
    files.write_csv(tmp_path / "x.csv", ("a", "b"), [[i, v] for i, v in enumerate(values)])
    columns = files.read_csv_columns(tmp_path / "x.csv")
    np.testing.assert_array_equal(columns["b"], values)  # NaN == NaN for assert_array_equal
    assert files.read_csv_rows(tmp_path / "x.csv")[1] == {"a": "1", "b": repr(1 / 3)}
    files.write_json(tmp_path / "x.json", {"a": values, "b": (1, "c")})
    assert files.read_json(tmp_path / "x.json") == {"a": [0.1, 1 / 3, None, 1e-300], "b": [1, "c"]}
