"""`make up`'s stop signals without a stack: SIGINT (Ctrl-C), SIGTERM (`kill`) and SIGHUP (the terminal
closed) are one and the same stop. Each, as the first signal, raises ``StopRequested`` in the main thread
(or, while a child is being started, right after it); every later one is only noted, so the clean-up
runs to its end; leaving restores the handlers that were there before. The e2e stop tests
(tests/e2e/test_devstack_up_e2e.py, tests/e2e/conftest.py) send them to a real stack."""

from __future__ import annotations

import os
import signal

import pytest

from dataplatform.devstack.up import STOP_SIGNALS, StopRequested, StopSignals

pytestmark = pytest.mark.unit


def _deliver(signum: int) -> None:
    """Send ``signum`` to this process; CPython runs its handler in the main thread right after."""
    os.kill(os.getpid(), signum)
    signal.getsignal(signum)  # a bytecode boundary: the pending handler has run


@pytest.mark.parametrize("first", STOP_SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_each_stop_signal_stops_once_and_every_later_one_is_only_noted(first, capfd):
    before = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    with StopSignals() as signals:
        with pytest.raises(StopRequested) as stopped:
            _deliver(first)
        assert (stopped.value.signum, signals.received, signals.stopping) == (first, first, True)
        for later in STOP_SIGNALS:  # during the clean-up: noted, nothing raised
            _deliver(later)
        assert signals.received == first
    assert {signum: signal.getsignal(signum) for signum in STOP_SIGNALS} == before
    noted = capfd.readouterr().err
    assert [line.split(":")[0] for line in noted.splitlines()] == [
        signal.Signals(s).name for s in STOP_SIGNALS
    ]
    assert all(line.endswith("already stopping, please wait") for line in noted.splitlines())


@pytest.mark.parametrize("first", STOP_SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_while_a_child_starts_stops_right_after_it_is_tracked(first):
    tracked = []
    with StopSignals() as signals:
        with pytest.raises(StopRequested) as stopped, signals.deferred():
            _deliver(first)
            tracked.append("child")  # the start and its clean-up registration finish first
        assert tracked == ["child"] and stopped.value.signum == first and signals.stopping
