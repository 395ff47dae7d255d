"""Shared pieces of the headless-Chromium tests (Debian's chromium, driven by Playwright; never `playwright install`)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
# Without chromium these tests report as skipped; .ci/run refuses to run without it, so CI never counts a skip as a pass.
needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian chromium at /usr/bin/chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
