"""Checks for `make dist-check`.

    check_dist.py contents DIST_DIR   the wheel holds the package alone (with py.typed); the sdist
                                      holds sources only (no results, venvs, site, figures, caches)
    check_dist.py import DIST_DIR     run by a fresh environment's python outside the checkout: the
                                      installed hypergrad is that environment's, its version is the
                                      distribution's, and an optimizer steps
"""

from __future__ import annotations

import sys
import tarfile
import zipfile
from pathlib import Path

DISTRIBUTION = "torch-hypergrad"
SDIST_FORBIDDEN = ("results/", "runs/", ".venv/", "site/", "dist/", "build/", "docs/figures/", "__pycache__/",
                   ".git/", ".ci/", ".pytest_cache/")


def _artifacts(dist: Path) -> tuple[Path, Path]:
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        sys.exit(f"expected one wheel and one sdist in {dist}, found {wheels + sdists}")
    return wheels[0], sdists[0]


def contents(dist: Path) -> None:
    wheel, sdist = _artifacts(dist)
    wheel_names = zipfile.ZipFile(wheel).namelist()
    stray = [n for n in wheel_names if not n.startswith(("hypergrad/", "torch_hypergrad-"))]
    if stray or "hypergrad/py.typed" not in wheel_names:
        sys.exit(f"{wheel.name}: files outside hypergrad/ {stray}, py.typed shipped: {'hypergrad/py.typed' in wheel_names}")
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if m.isfile()]
    # Paths inside the sdist start with "torch_hypergrad-VERSION/".
    relative = [m.name.split("/", 1)[1] for m in members]
    bad = [n for n in relative if any(n.startswith(p) or f"/{p}" in n for p in SDIST_FORBIDDEN)]
    if bad:
        sys.exit(f"{sdist.name} ships what it should not: {bad}")
    for name in ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "hypergrad/py.typed"):
        if name not in relative:
            sys.exit(f"{sdist.name} lacks {name}")
    unpacked = sum(m.size for m in members)
    print(f"{wheel.name}: {wheel.stat().st_size / 1024:.0f} KiB, {len(wheel_names)} files")
    print(f"{sdist.name}: {sdist.stat().st_size / 1024:.0f} KiB, {len(members)} files ({unpacked / 1024:.0f} KiB unpacked)")


def installed(dist: Path) -> None:
    from importlib import metadata

    import torch

    import hypergrad

    wheel, _ = _artifacts(dist)
    version = wheel.name.split("-")[1]
    where = Path(hypergrad.__file__).resolve()
    if Path(sys.prefix).resolve() not in where.parents:
        sys.exit(f"imported {where}, not the one installed in {sys.prefix}")
    if not (where.parent / "py.typed").is_file():
        sys.exit("py.typed is not installed")
    if not hypergrad.__version__ == metadata.version(DISTRIBUTION) == version:
        sys.exit(f"versions disagree: module {hypergrad.__version__}, metadata "
                 f"{metadata.version(DISTRIBUTION)}, file name {version}")
    weight = torch.nn.Parameter(torch.ones(3))
    # lr 0.01: the first update moves the weights by 2% of their norm (first_step_bound is 10%).
    optimizer = hypergrad.SGDHD([weight], lr=0.01, hypergrad_lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        (weight**2).sum().backward()
        optimizer.step()
    if not optimizer.param_groups[0]["lr"] > 0.01:
        sys.exit("the learning rate did not adapt")
    print(f"{DISTRIBUTION} {hypergrad.__version__} imports from {where.parent}, torch {torch.__version__}")


if __name__ == "__main__":
    mode, dist_dir = sys.argv[1:]
    {"contents": contents, "import": installed}[mode](Path(dist_dir).resolve())
