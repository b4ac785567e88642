"""One figure style for every study; figures saved as PNG (for the page) and SVG (for print)."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from genlab.errors import UserError  # noqa: E402

STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 130,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "svg.hashsalt": "genlab",        # stable SVG ids so a rebuilt figure is byte-identical
    "path.simplify": False,
}
COLORS = plt.get_cmap("tab10").colors


def figure(ncols: int = 1, nrows: int = 1, width: float = 5.2, height: float = 3.6, **kw):
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, **kw)
    return fig, axes


def save(fig, out_dir: Path, name: str) -> Path:
    """Save ``fig`` as ``name.png`` and ``name.svg`` in ``out_dir`` with fixed metadata.

    Each file is written to a temporary name and renamed into place, so a full disk leaves the
    previous figure intact and ends in one line (UserError) naming the file.
    """
    png = out_dir / f"{name}.png"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with plt.rc_context(STYLE):
            fig.tight_layout()
            for path, metadata in ((png, {"Software": None}),
                                   (out_dir / f"{name}.svg", {"Date": None, "Creator": None})):
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                try:
                    fig.savefig(tmp, format=path.suffix[1:], metadata=metadata, bbox_inches="tight")
                    os.replace(tmp, path)
                except OSError as exc:
                    tmp.unlink(missing_ok=True)
                    raise UserError(f"cannot write the figure {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
    return png
