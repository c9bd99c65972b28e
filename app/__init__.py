"""The application layer: jobs that turn the cores' results into files, TensorBoard entries and console output.

``app.photo_to_mesh`` is the photo -> face folder job (used by ``scripts/photo_to_mesh.py``),
``app.face_outputs`` the one writer of a face folder (also used by ``callbacks.face_writer``) and
``app.face_tensorboard`` what of a face goes to TensorBoard. The cores (``facetex``, ``graphkd``,
``foundation``) never import this package.
"""
