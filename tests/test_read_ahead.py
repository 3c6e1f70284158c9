"""store.read_ahead: the pages of a fetch, each fetched on a thread while the caller works
on the one before; the same pages, in order, errors raised in the caller, and an early stop
stops the fetching."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.store import read_ahead
from tests.conftest import examples


@settings(max_examples=examples(50), deadline=None)
@given(st.lists(st.lists(st.integers(), max_size=5), max_size=20))
def test_the_pages_come_as_fetched_in_order(pages: list[list[int]]) -> None:
    assert list(read_ahead(iter(pages))) == pages


def test_an_error_while_fetching_is_raised_in_the_caller_after_the_pages_before_it() -> None:
    def pages() -> Iterator[int]:
        yield 1
        yield 2
        raise ConnectionError("server closed the connection")

    got: list[int] = []
    with pytest.raises(ConnectionError, match="server closed"):
        for page in read_ahead(pages()):
            got.append(page)
    assert got == [1, 2]


def test_stopping_early_stops_the_fetching() -> None:
    fetched: list[int] = []

    def pages() -> Iterator[int]:
        for n in range(1_000):
            fetched.append(n)
            yield n

    before = threading.active_count()
    reader = read_ahead(pages())
    assert next(reader) == 0
    reader.close()  # the caller stops after the first page
    assert threading.active_count() == before
    # At most the page in the caller's hands, the one waiting and the one being handed over.
    assert len(fetched) <= 3
