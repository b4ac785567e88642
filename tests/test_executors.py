"""Sweeps as Ray tasks give the same results as the in-process executor."""
import pandas as pd
import pytest

from genlab.cli import main

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'genlab[ray]')")

SWEEP = ["run", "randomization", "--preset", "smoke", "--seeds", "0,1,2", "--quiet"]


@pytest.mark.ray
def test_ray_sweep_matches_local_sweep(tmp_path):
    assert main(SWEEP + ["--out", str(tmp_path / "local")]) == 0
    try:
        assert main(SWEEP + ["--out", str(tmp_path / "ray"), "--executor", "ray"]) == 0
    finally:
        ray.shutdown()
    local = pd.read_csv(tmp_path / "local" / "results.csv")
    remote = pd.read_csv(tmp_path / "ray" / "results.csv")
    assert len(local) == 3 * 6
    pd.testing.assert_frame_equal(local, remote)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "local" / "curves.csv"),
                                  pd.read_csv(tmp_path / "ray" / "curves.csv"))
