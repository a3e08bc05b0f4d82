"""Fixtures shared by the quality-oracle tests."""
import os
from pathlib import Path

import pytest


@pytest.fixture
def unwritable_folder(tmp_path) -> Path:
    """A folder path in which nothing can be created by this user (a read-only place)."""
    if os.geteuid() != 0:
        folder = tmp_path / "read_only"
        folder.mkdir()
        folder.chmod(0o500)
        yield folder / "cache"
        folder.chmod(0o700)
        return
    if not Path("/proc/self").is_dir():
        pytest.skip("running as root without /proc: no folder here refuses writes to root")
    yield Path("/proc/his_marl_no_such_folder/cache")  # procfs refuses new entries, even to root
