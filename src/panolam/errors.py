"""The one error type for problems a user can fix (a bad file, a wrong flag, an unwritable folder).

Every input error in the package derives from :class:`PanoLAMError` (itself a ``ValueError``, so
older ``except ValueError`` handlers keep working). Its message is one line that names the file or
flag and says what to do; the ``panolam`` command prints it without a traceback (exit code 2) and
the web app shows it as the page's error message.
"""

from __future__ import annotations

import os
from pathlib import Path


class PanoLAMError(ValueError):
    """An input the user can fix; the message names the file/flag and what to do."""


def check_output_dir(path: str | os.PathLike, flag: str = "-o") -> Path:
    """Make sure ``path`` is (or can become) a writable folder, before any slow work starts.

    Raises :class:`PanoLAMError` when it is an existing file, lies under a file, or is not writable.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise PanoLAMError(f"{flag} {p}: exists and is not a folder; give a folder path")
    probe = p
    while not probe.exists():  # the nearest existing ancestor decides whether we may create it
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise PanoLAMError(f"{flag} {p}: {probe} is a file, so the folder cannot be created; choose another path")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise PanoLAMError(f"{flag} {p}: {probe} is not writable; choose a folder you can write to")
    return p
