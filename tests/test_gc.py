"""The server process keeps its start-up objects out of the cyclic GC's reach (core.asgi)."""

import gc
import sys

import pytest

from core.asgi import gc_prepare_for_serving


@pytest.fixture
def gc_state(monkeypatch):
    at_exit = []
    monkeypatch.setattr("core.asgi.atexit.register", at_exit.append)
    yield at_exit
    gc.unfreeze()


def test_start_up_objects_are_frozen_and_later_ones_collected(gc_state):
    sys.modules.pop("json.tool", None)  # a module nothing here imports: it must be imported by the call
    before = gc.get_freeze_count()
    survivor = {"made": ["before", "serving"]}

    frozen = gc_prepare_for_serving("json.tool")

    assert "json.tool" in sys.modules
    assert frozen == gc.get_freeze_count() > before
    # Frozen objects are in no generation the collector scans.
    assert not any(obj is survivor for obj in gc.get_objects())
    # What is made afterwards is collected as usual.
    cycle = []
    cycle.append(cycle)
    assert any(obj is cycle for obj in gc.get_objects())
    assert gc_state == [gc.unfreeze]  # at exit, so that extension modules see their objects finalised
