"""Random-number generators saved in every checkpoint and put back on resume, so a killed run finishes as if it never stopped.

Lightning's checkpoints hold the weights, optimisers, schedulers, loop counters and callback states, but
not the random generators. A run resumed with ``--ckpt_path last`` would draw its dropout masks, the
training sampler's shuffle and NeighborLoader's neighbour samples from ``seed_everything``'s fresh
stream instead of from where the interrupted run stood, and end with different weights and metrics.

:class:`RNGStateCheckpoint` writes ``checkpoint["rng_states"]``: one entry per rank (global rank order)
holding the torch CPU generator, every CUDA device's generator when CUDA is in use, NumPy's global
generator and Python's ``random``, all as tensors, ints and tuples so ``torch.load(weights_only=True)``
reads them. ``main.py`` adds it to every run.

When the states are put back matters. Lightning 2.6 builds the first data-loader iterator of a resumed
fit (the sampler's shuffle seed and the loader's base seed are drawn there) in ``FitLoop.setup_data``,
before any ``on_train_start``/``on_train_epoch_start`` hook, while in an uninterrupted run the next
epoch's iterator is built right after the epoch-end checkpoint. So the states are restored in
``on_load_checkpoint``; the sanity-check validation that runs in between is wrapped in Lightning's
``isolate_rng`` and leaves them untouched. Resume is therefore exact from checkpoints written at the end
of a training epoch, ``ModelCheckpoint``'s default when validation runs once per epoch; a checkpoint
written mid-epoch (``val_check_interval`` < 1, ``every_n_train_steps``, the SLURM signal's
``hpc_ckpt``) restores the generators but Lightning restarts that epoch's data from a new iterator.
"""
from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn

RNG_STATES_KEY = "rng_states"


def capture_rng_state() -> dict[str, Any]:
    """This process's generators: ``{"torch", "numpy", "python"[, "cuda"]}`` in ``weights_only``-safe types."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached_gaussian)),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back what :func:`capture_rng_state` returned (CUDA generators only where CUDA is available)."""
    torch.set_rng_state(state["torch"])
    kind, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_from_ranks(state: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rank's ``state`` in global-rank order (a collective under DDP; ``[state]`` in a single process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [state]
    states: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(states, state)
    return states


class RNGStateCheckpoint(L.Callback):
    """Saves every rank's random generators in each checkpoint; restores this rank's when ``fit`` resumes.

    ``validate``/``test``/``predict`` with a ``ckpt_path`` keep the generators ``seed_everything`` set.
    A checkpoint without the states (written before this callback existed), one from a different
    number of ranks, or one from more CUDA devices than this process sees, resumes with a warning
    that the run will not repeat the uninterrupted one.
    """

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[RNG_STATES_KEY] = gather_from_ranks(capture_rng_state())

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn != TrainerFn.FITTING:
            return
        states = checkpoint.get(RNG_STATES_KEY)
        problem = None
        if states is None:
            problem = f"the checkpoint has no '{RNG_STATES_KEY}' (it was written without {type(self).__name__})"
        elif len(states) != trainer.world_size:
            problem = f"the checkpoint holds {len(states)} ranks' generators but this run has {trainer.world_size} ranks"
        elif torch.cuda.is_available() and len(states[trainer.global_rank].get("cuda", ())) > torch.cuda.device_count():
            problem = f"the checkpoint holds more CUDA generators than the {torch.cuda.device_count()} devices seen here"
        if problem is not None:
            rank_zero_warn(f"Resuming without restoring the random generators: {problem}. Training continues, but "
                           "dropout and sampling draws differ from an uninterrupted run with the same seed.")
            return
        restore_rng_state(states[trainer.global_rank])
