"""Fixtures shared by unit tests: a real Directory on a SQLite file in tmp_path (tests/unit/directory_helpers.py)."""

import pytest

from tests.unit.directory_helpers import Clock, Opened


@pytest.fixture
async def opened():
    o = Opened()
    yield o
    await o.close()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
async def directory(opened, tmp_path, clock):
    return await opened.directory(tmp_path, clock)
