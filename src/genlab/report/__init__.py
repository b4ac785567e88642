"""The HTML report: every study of a reproduce folder on one self-contained page."""
from genlab.report.build import build_report, load_run

__all__ = ["build_report", "load_run"]
