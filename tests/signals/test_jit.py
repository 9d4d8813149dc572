"""signals.jit: kernels load without numba importing scipy.linalg, and jitted linear algebra still works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_CHILD = r"""
import json, sys
import numpy as np
from signals import WhaleParams, run_batch
ts, px = np.array([0, 1000], np.int64), np.array([1.0, 1.0])
run_batch(ts, px, np.array([1.0, 1.0]), np.array([1, -1], np.int8), WhaleParams.from_dict({"min_notional_usd": 1e6}))
after_kernel = "scipy.linalg" in sys.modules
from signals.jit import njit
@njit
def f(a, b):
    return np.dot(a, b) + np.convolve(a, b).sum()
print(json.dumps({"after_kernel": after_kernel, "f": f(np.ones(3), np.ones(3)), "blas_later": "scipy.linalg" in sys.modules}))
"""


def test_a_kernel_loads_without_scipy_linalg_and_jitted_dot_still_compiles():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, env=env, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    # np.dot compiles against SciPy's BLAS, imported then; np.convolve uses the plain loop.
    assert got == {"after_kernel": False, "f": 12.0, "blas_later": True}
