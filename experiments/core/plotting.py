"""Shared plotting style for every figure of the experiments.

One rule makes all figures comparable: each base rule has one colour; its hypergradient (HD)
variant is drawn solid and the base dashed in that colour. Learning-rate schedules of a base
("sgd_cosine", ...) are dotted in the base's colour; peer methods (Prodigy, D-Adaptation,
Schedule-Free, DoG) are dash-dotted in colours of their own.

Figures are written with :func:`save_figure` (PNG and PDF, each atomically), animations with
:func:`save_gif`, and legends are put outside the data with :func:`legend_outside`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image

from experiments.core.files import atomic_write

matplotlib.use("Agg")  # figures are only ever written to files, also on machines without a display

from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.legend import Legend  # noqa: E402

# Base rules: (colour, label). Colours are matplotlib's colour-blind-friendlier tab10 set.
BASE_STYLES: dict[str, tuple[str, str]] = {
    "sgd": ("tab:blue", "SGD"),
    "sgdm": ("tab:orange", "SGD momentum"),
    "sgdn": ("tab:green", "SGD Nesterov"),
    "adagrad": ("tab:red", "AdaGrad"),
    "rmsprop": ("tab:purple", "RMSprop"),
    "adam": ("tab:brown", "Adam"),
    "adamw": ("tab:pink", "AdamW"),
}

PEER_STYLES: dict[str, tuple[str, str]] = {
    "prodigy": ("tab:gray", "Prodigy"),
    "dadapt_adam": ("tab:olive", "D-Adapt Adam"),
    "schedulefree_adamw": ("tab:cyan", "Schedule-Free AdamW"),
    "dog": ("black", "DoG"),
}

HD_LINESTYLE = "-"
BASE_LINESTYLE = "--"
SCHEDULE_LINESTYLE = ":"
PEER_LINESTYLE = "-."


@dataclass(frozen=True)
class MethodStyle:
    """How one method is drawn: matplotlib colour, linestyle and legend label."""

    color: str
    linestyle: str
    label: str

    def kwargs(self) -> dict[str, str]:
        """Keyword arguments for ``Axes.plot``."""
        return {"color": self.color, "linestyle": self.linestyle, "label": self.label}


def method_style(method: str) -> MethodStyle:
    """Style of a method named as in the experiments' registry.

    ``"<base>"`` is dashed, ``"<base>_hd"`` solid, ``"<base>_<schedule>"`` (e.g. ``"sgd_cosine"``)
    dotted, all in the base's colour; peers are dash-dotted in their own colours.
    """
    if not isinstance(method, str):
        raise TypeError(f"method must be a str, got {type(method).__name__}")
    if method in PEER_STYLES:
        color, label = PEER_STYLES[method]
        return MethodStyle(color, PEER_LINESTYLE, label)
    if method in BASE_STYLES:
        color, label = BASE_STYLES[method]
        return MethodStyle(color, BASE_LINESTYLE, label)
    # Longest base first so that "sgdn_hd" is not read as base "sgd" with suffix "n_hd".
    for base in sorted(BASE_STYLES, key=len, reverse=True):
        if method.startswith(base + "_"):
            color, label = BASE_STYLES[base]
            suffix = method[len(base) + 1 :]
            if suffix == "hd":
                return MethodStyle(color, HD_LINESTYLE, f"{label}-HD")
            return MethodStyle(color, SCHEDULE_LINESTYLE, f"{label} + {suffix.replace('_', ' ')}")
    known = sorted(BASE_STYLES) + sorted(PEER_STYLES)
    raise ValueError(
        f"method {method!r} has no plot style; expected one of {known}, "
        "'<base>_hd' or '<base>_<schedule>'"
    )


def legend_outside(target: Axes | Figure, where: str = "right", **kwargs) -> Legend:
    """Put the legend of ``target`` where it covers no data.

    ``"right"``: just right of the Axes or Figure (save with :func:`save_figure`, whose tight
    bounding box keeps it in the file). ``"below"``: for an Axes under its x label; for a Figure
    centred in its bottom margin, which the caller reserves (e.g. ``tight_layout(rect=(0, 0.05,
    1, 1))``) so that the legend is inside the canvas, also in animation frames. Extra keyword
    arguments go to ``legend`` (e.g. ``handles``, ``ncol``).
    """
    if where not in ("right", "below"):
        raise ValueError(f"where must be 'right' or 'below', got {where!r}")
    if not isinstance(target, (Axes, Figure)):
        raise TypeError(f"target must be a matplotlib Axes or Figure, got {type(target).__name__}")
    if where == "right":
        placement = {"loc": "center left", "bbox_to_anchor": (1.01, 0.5)}
    elif isinstance(target, Figure):
        placement = {"loc": "lower center", "bbox_to_anchor": (0.5, 0.0)}
    else:
        placement = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.18)}
    placement.update(kwargs)
    placement.setdefault("frameon", False)
    return target.legend(**placement)


def save_figure(fig: Figure, path_without_ext: str | os.PathLike, dpi: int = 150) -> tuple[Path, Path]:
    """Write ``fig`` as ``<path>.png`` and ``<path>.pdf``; return both paths.

    The PDF is written (atomically) while the PNG's temporary file waits, so an error in either
    leaves no new half of the pair behind.
    """
    base = Path(path_without_ext)
    if base.suffix.lower() in (".png", ".pdf"):
        raise ValueError(f"path_without_ext must not end in an extension, got {str(base)!r}")
    png, pdf = base.with_name(base.name + ".png"), base.with_name(base.name + ".pdf")

    def write_both(temporary_png: str) -> None:
        fig.savefig(temporary_png, format="png", dpi=dpi, bbox_inches="tight")
        atomic_write(pdf, lambda temporary: fig.savefig(temporary, format="pdf", dpi=dpi, bbox_inches="tight"))

    atomic_write(png, write_both)
    return png, pdf


def save_gif(frames: Sequence[np.ndarray], path: str | os.PathLike, fps: float, final_pause_s: float = 0.0) -> Path:
    """Write RGB(A) uint8 frames as a looping animated GIF at ``path``, atomically; the last frame
    stays ``final_pause_s`` seconds longer before the loop restarts.

    All frames share one palette taken from the last frame (the most complete picture), without
    dithering: flat colours that repeat from frame to frame are what keeps a GIF small.
    """
    final = Path(path)
    if final.suffix.lower() != ".gif":
        raise ValueError(f"path must end in .gif, got {str(final)!r}")
    if not frames:
        raise ValueError("frames must not be empty")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if not final_pause_s >= 0:
        raise ValueError(f"final_pause_s must be >= 0, got {final_pause_s}")
    # GIF stores durations in units of 10 ms.
    durations = [10 * round(100 / fps)] * len(frames)
    durations[-1] += 10 * round(100 * final_pause_s)
    images = [Image.fromarray(np.asarray(frame)[..., :3]) for frame in frames]
    palette = images[-1].quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    indexed = [image.quantize(palette=palette, dither=Image.Dither.NONE) for image in images]

    def write(name: str) -> None:
        indexed[0].save(
            name, format="GIF", save_all=True, append_images=indexed[1:], duration=durations, loop=0
        )

    return atomic_write(final, write)


