"""The pieces of ``main.py`` that are not the LightningCLI itself: one-line errors, the checkpoint policy, the
class catalogue of ``--help``. Imports nothing heavy, so ``main.py --help`` and a mistyped option answer fast."""
