"""Sparse CSR tensors without torch's "beta" warning, which it prints at every first use of the layout."""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def csr_beta_warning_silenced() -> Iterator[None]:
    """Run the block with torch's "Sparse CSR tensor support is in beta" warning ignored (and only that one)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        yield
