"""Whether this server process is draining: it got SIGTERM (or SIGINT) and is stopping.

While it drains, /healthz answers 503, new turns are refused with 503 and open streams end with an
instruction to reconnect (to another process, or to this one once it has restarted); turns.maintenance
runs the drain itself. The state is the process's: one server process serves one event loop.
"""

from __future__ import annotations

_state = {"draining": False, "handed_over": False}


def draining() -> bool:
    """True from the stop signal on."""
    return _state["draining"]


def handed_over() -> bool:
    """True once the generations still running at the end of the drain have been handed over."""
    return _state["handed_over"]


def drain_begin() -> None:
    _state["draining"] = True


def drain_handed_over() -> None:
    _state["handed_over"] = True


def drain_reset() -> None:
    """Back to serving (tests; a process never stops draining)."""
    _state.update(draining=False, handed_over=False)
