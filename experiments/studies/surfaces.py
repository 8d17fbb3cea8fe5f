"""Optimizer paths on 2-D test functions (``surfaces.png``, ``surfaces.gif``): a wrapper around
:func:`experiments.surfaces.run_surfaces`, which does the work and writes the files.

The paths take no data and are deterministic; a finished set of files whose ``surfaces.json``
records the same settings is reused, so a rerun of the suite does not redraw the animation.
"""

from __future__ import annotations

import json
from pathlib import Path

from experiments.reproduce import StudyOutput, SuiteContext
from experiments.surfaces import HypergradSettings, methods_available, run_surfaces

FILES = ("surfaces.png", "surfaces.pdf", "surfaces.gif", "surfaces_curves.png", "surfaces_curves.pdf",
         "surfaces.md", "surfaces.json")


def _finished(out_dir: Path, quick: bool) -> bool:
    """Whether ``out_dir`` holds every file of a finished run with the current settings."""
    if not all((out_dir / name).is_file() for name in FILES):
        return False
    settings = json.loads((out_dir / "surfaces.json").read_text())["settings"]
    hd = HypergradSettings()
    return (settings["quick"] == quick and settings["hypergrad_rule"] == hd.rule
            and settings["hypergrad_lr"] == hd.hypergrad_lr and settings["methods"] == methods_available())


def run(context: SuiteContext) -> StudyOutput:
    quick = context.budget.name == "quick"
    if _finished(context.out_dir, quick):
        context.cache.reused += 1
        markdown = (context.out_dir / "surfaces.md").read_text()
    else:
        markdown = run_surfaces(context.out_dir, quick=quick)["markdown"]
        context.cache.trained += 1
    summary = "## Optimizer paths on 2-D test surfaces (surfaces.png, surfaces.gif)\n\n" + markdown.replace(
        "### Optimizer paths on 2-D test surfaces (surfaces.png)\n\n", "")
    return StudyOutput([context.out_dir / name for name in FILES], summary)
