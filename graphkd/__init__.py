"""ABKD's core: GNN families that expose every layer's output and the KD losses.

Plain PyTorch + PyG; nothing here imports Lightning, so the pieces work inside any
training loop::

    from graphkd.models import GCN
    from graphkd.distill import ABKD
"""
