"""The rasteriser's C++ kernels (``csrc/raster.cpp``), compiled from source on first use.

``torch.utils.cpp_extension`` builds them once per machine and torch version into its
cache (``$TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``) and later
processes load the cached library. Without a C++ compiler (or ninja) the build fails
once, a warning says why and how to fix it, and the rasteriser uses its pure-PyTorch
backend instead: same results, slower.
"""
from __future__ import annotations

import functools
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("csrc") / "raster.cpp"
FLAGS = ["-O3", "-ffp-contract=off", "-fopenmp"]  # no fused multiply-adds: bit-identical to the torch backend


@functools.lru_cache(maxsize=1)
def kernels() -> object | None:
    """``torch.ops.facetex_raster`` (``rasterize``, ``interpolate``), or None when it cannot be built."""
    try:
        from torch.utils.cpp_extension import load

        load(name="facetex_raster", sources=[str(SOURCE)], extra_cflags=FLAGS, extra_ldflags=["-fopenmp"],
             is_python_module=False, verbose=False)
    except (OSError, RuntimeError, ImportError, FileNotFoundError) as error:
        warnings.warn(f"facetex: the C++ rasteriser could not be built ({type(error).__name__}: "
                      f"{str(error).strip()[-300:]}); using the slower pure-PyTorch backend. Install a C++ "
                      "compiler (g++) and ninja (pip install ninja) to build it, or pass backend='torch' "
                      "to silence this.", RuntimeWarning, stacklevel=3)
        return None
    return torch.ops.facetex_raster


def available() -> bool:
    """Whether the C++ kernels are built (building them now if needed)."""
    return kernels() is not None
