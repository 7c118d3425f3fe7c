"""The notebooks run, as scripts, and their results have the shape the physics says they must."""
import os
import subprocess
import sys

import numpy as np
import pandas as pd

from conftest import REPO


def test_decode_design_space_notebook(tmp_path):
    env = {**os.environ, "MEMSIM_NOTEBOOK_OUT": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(REPO / "notebooks" / "decode_design_space.py")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "decode_design_space.html").stat().st_size > 0
    results = pd.read_csv(tmp_path / "decode_design_space.csv")
    for (workload, context), group in results.groupby(["workload", "context"]):
        rate = group.sort_values("hbm_TBps").tokens_per_s.to_numpy()
        assert (np.diff(rate) >= 0).all(), f"{workload} at {context}: more bandwidth never slows decode"
    for bandwidth, group in results.groupby("hbm_TBps"):
        llama = group[group.workload == "llama2-7b"].sort_values("context")
        mamba = group[group.workload == "mamba-2.8b"].sort_values("context")
        assert (np.diff(llama.tokens_per_s) < 0).all() and (np.diff(llama.hbm_peak_GiB) > 0).all()
        assert np.ptp(mamba.tokens_per_s) == 0 and np.ptp(mamba.hbm_peak_GiB) == 0
