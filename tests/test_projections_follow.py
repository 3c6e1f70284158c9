"""The runner following the log: LISTEN/NOTIFY on PostgreSQL with a fallback poll, a poll
on SQLite; and a runner whose position moved under it."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from ledger.application import Ledger
from ledger.projections import ProjectionRunner, Views
from ledger.projections.wakeup import Wakeup
from tests.helpers import contribute, enrol, make_id
from tests.test_projections_support import check_against_replay, scenario, snapshot


@contextmanager
def following(ledger: Ledger, poll_interval_s: float) -> Iterator[ProjectionRunner]:
    runner = ProjectionRunner(ledger)
    runner.run_until_caught_up()
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,),
                              kwargs={"poll_interval_s": poll_interval_s})
    thread.start()
    try:
        yield runner
    finally:
        stop.set()
        thread.join(timeout=10)
        assert not thread.is_alive()


def caught_up_within(ledger: Ledger, seconds: float) -> float | None:
    """Seconds until every view has reached the head of the log, or None."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if all(p["behind"] == 0 for p in Views(ledger).positions().values()):
            return time.monotonic() - started
        time.sleep(0.02)
    return None


def is_postgres(ledger: Ledger) -> bool:
    return ledger.url.startswith("postgresql://")


@pytest.fixture
def wakeups(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """What each wait of a following runner ended with: True for a notification."""
    seen: list[bool] = []
    for cls in Wakeup.__subclasses__():
        def wait(self: Wakeup, stop: threading.Event, _wait: Any = cls.wait) -> bool:
            woken: bool = _wait(self, stop)
            seen.append(woken)
            return woken
        monkeypatch.setattr(cls, "wait", wait)
    return seen


def own_channel(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """A channel of this test's own: the recorder's channel is named after the events
    table, so ledgers in other schemas of the same database NOTIFY it too."""
    monkeypatch.setattr(ledger.recorder, "channel_name", f"test_{uuid.uuid4().hex}")


def test_a_notification_wakes_the_runner_at_once(ledger: Ledger, wakeups: list[bool],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    if not is_postgres(ledger):
        pytest.skip("SQLite has no notifications; covered by the poll test")
    own_channel(ledger, monkeypatch)
    with following(ledger, poll_interval_s=60):
        time.sleep(0.3)  # the runner is waiting now
        enrol(ledger, make_id(1))
        assert caught_up_within(ledger, 5) is not None
    assert True in wakeups


def test_a_lost_notification_costs_one_poll_interval(ledger: Ledger, wakeups: list[bool],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # Writes that never NOTIFY, as if the notification were lost (SQLite has none).
    if is_postgres(ledger):
        own_channel(ledger, monkeypatch)
        monkeypatch.setattr(ledger.recorder, "_notify_channel", lambda *_: None)
    with following(ledger, poll_interval_s=0.5):
        time.sleep(0.3)
        enrol(ledger, make_id(1))
        contribute(ledger, make_id(1), 2016)
        assert caught_up_within(ledger, 5) is not None
    assert wakeups and True not in wakeups  # caught up by polling alone
    assert Views(ledger).balances()["accounts"]["1001"] == 50000


def test_a_runner_whose_position_moved_rolls_back_and_resumes(ledger: Ledger) -> None:
    scenario(ledger)
    slow, fast = ProjectionRunner(ledger, batch_size=4), ProjectionRunner(ledger, batch_size=9)
    slow.targets()  # slow has read the stored positions ...
    fast.step()     # ... and fast moves them on
    read, committed = slow.step()
    assert read == 4 and not committed and slow.conflicts == 1
    assert slow.step()[1]  # from the stored position now
    slow.run_until_caught_up()
    fast.run_until_caught_up()
    check_against_replay(ledger, snapshot(ledger))


def test_refused_view_name(ledger: Ledger) -> None:
    from ledger.errors import InvalidInput

    with pytest.raises(InvalidInput, match="no view named 'ledgers'"):
        ProjectionRunner(ledger, ["ledgers"])


