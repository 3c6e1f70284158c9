"""Half of a big job done by a forked child process, beside this one.

The per-line Python of a big import or funding is its longest part, and threads gain nothing
under the GIL. A child forked at the start inherits what the parent holds in memory (the
rules, the mapper and its key), reads what it needs over a database connection of its own
(the parent's connections and pool are not fork-safe), and sends its results as pickled
messages. The parent takes them between its own pieces of work, so that neither waits for
the other to pack or unpack them all at the end. Nothing is written until the parent has
every result: a child that dies, fails or hangs fails the whole job, and nothing is stored.
"""

from __future__ import annotations

import multiprocessing
import pickle
import queue
import sqlite3
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, cast
from uuid import UUID

from ledger.errors import LedgerError
from ledger.store import StoreQueries, autocommit_connection

CHILD_CONNECT_S = 10  # the child's own database connection: connect timeout
CHILD_WAIT_S = 120.0  # the longest a parent waits for word from its child
Post = Callable[[tuple[Any, ...]], None]


class ChildFailed(RuntimeError):
    """The child process died, failed or hung: nothing was stored."""


def can_fork(ledger: Any) -> bool:
    """Whether a forked child can share the work: a fork start method, this process not a
    daemon (it may not start children), and a store the child can open a connection of its
    own to (not an in-memory SQLite)."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return False
    if multiprocessing.current_process().daemon:
        return False
    datastore = cast(Any, ledger.recorder).datastore
    return bool(ledger.queries.is_postgres or not datastore.pool.is_sqlite_memory_mode)


class OwnQueries(StoreQueries):
    """ledger.queries over a connection of this process's own: a forked child's. Only reads
    (fetch); the recorder is the parent's and is not used."""

    def __init__(self, queries: StoreQueries) -> None:
        self.is_postgres, self.prefix = queries.is_postgres, queries.prefix
        self.recorder = queries.recorder  # for its table's name only
        if self.is_postgres:
            self.conn: Any = autocommit_connection(queries.recorder, CHILD_CONNECT_S)
        else:
            self.conn = sqlite3.connect(queries.recorder.datastore.pool.db_name, uri=True)

    def fetch(self, sql: str, params: Sequence[Any] = (), *, binary: bool = False
              ) -> list[tuple[Any, ...]]:
        sql = sql.replace("{p}", self.prefix)
        if self.is_postgres:
            with self.conn.cursor(binary=binary) as curs:
                curs.execute(sql.replace("?", "%b"), params)  # binary, as StoreQueries.fetch
                return list(curs.fetchall())
        return [tuple(r) for r in self.conn.execute(sql, params).fetchall()]

    def close(self) -> None:
        self.conn.close()


def run_child(send: Connection, work: Callable[[Post], None]) -> None:
    """The child's body: work(post) posts its messages, then ("done",) marks the last;
    then the pipe is closed. A failure is posted as ("refused", class, args, attributes)
    for a LedgerError, re-raised as it was by the parent, or ("failed", traceback)."""
    # Sent by a thread: results are far more than a pipe holds, and the work goes on
    # meanwhile.
    outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()

    def sender() -> None:
        while (data := outbox.get()) is not None:
            send.send_bytes(data)

    def post(message: tuple[Any, ...]) -> None:
        outbox.put(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))

    thread = threading.Thread(target=sender, name="forked-sender", daemon=True)
    thread.start()
    try:
        work(post)
        post(("done",))
    except LedgerError as e:
        # Most LedgerErrors cannot be unpickled (their __init__ takes field and rule, their
        # args hold the message): sent as class, args and attributes.
        post(("refused", type(e), e.args, vars(e)))
    except BaseException:
        post(("failed", traceback.format_exc()))
    outbox.put(None)
    thread.join()
    send.close()


class Child:
    """A forked child running `work`, and the messages it sends. `what` names its work in
    errors ("the process checking half the file"); `nothing` says what was not done."""

    def __init__(self, name: str, work: Callable[[Post], None], *, what: str,
                 nothing: str, error: type[Exception] = ChildFailed) -> None:
        self.what, self.nothing, self.error = what, nothing, error
        context = multiprocessing.get_context("fork")
        self.receive, send = context.Pipe(duplex=False)
        self.process: BaseProcess = context.Process(target=run_child, name=name,
                                                    args=(send, work), daemon=True)
        self.process.start()
        send.close()  # the child's end: closed here so that its death reads as end of file
        self.finished = False

    def messages(self, *, wait: bool) -> Iterator[tuple[Any, ...]]:
        """The child's messages sent so far (wait=False) or until its last, at most
        CHILD_WAIT_S apart (wait=True). A failure in the child is raised here; its
        ("done",) is taken here, not yielded, and marks the child finished."""
        wait_s = CHILD_WAIT_S
        while not self.finished:
            if not self.receive.poll(wait_s if wait else 0):
                if not wait:
                    return
                raise self.error(f"{self.what} (pid {self.process.pid}) gave no answer in "
                                 f"{wait_s:.0f} s; {self.nothing}")
            try:
                message = self.receive.recv()
            except (EOFError, OSError):
                self.process.join(wait_s)
                raise self.error(f"{self.what} (pid {self.process.pid}) died (exit code "
                                 f"{self.process.exitcode}); {self.nothing}") from None
            kind = message[0]
            if kind == "refused":
                cls, args, attributes = message[1:]
                error = cls.__new__(cls)
                error.args = args
                error.__dict__.update(attributes)
                raise error
            if kind == "failed":
                raise self.error(f"{self.what} (pid {self.process.pid}) failed; "
                                 f"{self.nothing}:\n{message[1]}")
            if kind == "done":
                self.finished = True
                return
            yield message

    def close(self) -> None:
        """Stop the child if its work is of no use (it failed, or this process did)."""
        if not self.finished:
            self.process.kill()
        self.receive.close()
        self.process.join(CHILD_WAIT_S)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def uuids_of(blob: bytes, known: dict[bytes, UUID]) -> list[UUID]:
    """The UUIDs packed as 16 bytes each in blob (pickling a UUID costs several times more),
    one object per distinct id across calls (known)."""
    out = []
    for i in range(0, len(blob), 16):
        key = blob[i:i + 16]
        pid = known.get(key)
        if pid is None:
            pid = known[key] = UUID(bytes=key)
        out.append(pid)
    return out
