"""One figure style for every study; figures saved as PNG (for the page) and SVG (for print)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

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
    """Save ``fig`` as ``name.png`` and ``name.svg`` in ``out_dir`` with fixed metadata."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{name}.png"
    with plt.rc_context(STYLE):
        fig.tight_layout()
        fig.savefig(png, metadata={"Software": None}, bbox_inches="tight")
        fig.savefig(out_dir / f"{name}.svg", metadata={"Date": None, "Creator": None}, bbox_inches="tight")
    plt.close(fig)
    return png
