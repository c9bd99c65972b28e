"""The one base class of every error a user causes with bad input and can fix.

``main.py`` and the scripts print such an error as one ``error: <message>`` line and exit with code 2; any other
exception is a bug and keeps its traceback. Subclasses also derive from the builtin that fits
(``FileNotFoundError``, ``ValueError``, ...), so ``except FileNotFoundError`` keeps working.
"""
from __future__ import annotations


class InputError(Exception):
    """Bad input (a file, an option, a dataset) whose message says what is wrong and how to fix it."""
