"""Experiments as files, sweeps as one command: a base ``main.py`` config plus a grid of overrides, run cell by
cell in this process, in a pool of local workers or as a SLURM job array, each cell an ordinary run folder, and a
report built from the run folders alone. ``python -m sweep --help``; docs/experiments.md."""
