"""The ``njit`` the project's kernels are compiled with: numba's, after one start-up cut.

The first kernel a process compiles or loads from numba's cache sets up numba's CPU target,
whose ``numba.np.arraymath`` imports ``scipy.linalg`` (~0.5 s, a third of a ``bt run``'s serial
start on 2 cores) only to learn whether BLAS exists: if it does, ``np.convolve`` and
``np.correlate`` in jitted code take their inner products from BLAS, else from a plain loop.
No whalebt kernel calls either, so that module is imported here with the probe answered "no
BLAS" (the import of ``scipy.linalg.cython_blas`` refused for that moment only). ``np.dot`` and
``np.linalg`` in jitted code are unaffected: they import SciPy's BLAS when they compile. Where
SciPy's BLAS is loaded already (a notebook), nothing is changed.
"""

from __future__ import annotations

import sys

_PROBE = "scipy.linalg.cython_blas"

if _PROBE not in sys.modules and "numba.np.arraymath" not in sys.modules:
    sys.modules[_PROBE] = None  # type: ignore[assignment]  # `import` of it raises ImportError
    try:
        import numba.np.arraymath  # noqa: F401
    finally:
        del sys.modules[_PROBE]

from numba import njit  # noqa: E402

__all__ = ["njit"]
