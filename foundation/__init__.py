"""What both cores share and neither owns: atomic file writing, checkpoint reading, the user-error base.

Plain Python + torch; imports nothing of the project, so ``graphkd`` and ``facetex`` may both use it.
"""
