"""`pension-ledger serve`: the views over HTTP, read only, as JSON.

    GET /balances?as_of=YYYY-MM-DD&by=township
    GET /fund-balances?as_of=&by=
    GET /trial-balance?as_of=
    GET /statement/<resident ID>?as_of=
    GET /roster?status=pensioner
    GET /report/county?year=YYYY&as_of=
    GET /positions

Amounts are integer fen. Every answer says the notification position its view had reached.
Resident IDs and accounts are always masked: the API has no way to know who asks. A request
the rules refuse gets a problem body (RFC 9457: type, title, status, detail naming the field
and the rule): 400 for bad input, 404 for what is not there, 405 for anything but GET.
The views are kept up to date by a projection runner following the log beside the server
(serve()).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from threading import Event, Thread
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from ledger.application import Ledger
from ledger.errors import InvalidInput, LedgerError, NotFound
from ledger.projections import ProjectionRunner, Views
from ledger.projections.commands import parse_date

MAX_URL_CHARS = 2_048
POLL_INTERVAL_S = 1.0
RETRY_AFTER_S = 10.0
Query = dict[str, str]


def _date(query: Query, field: str) -> date | None:
    return parse_date(query.get(field), field)


def _by(query: Query) -> Any:
    by = query.get("by")
    if by not in (None, "township"):
        raise InvalidInput("by", "must be township")
    return by


def _year(query: Query) -> int:
    text = query.get("year", str(date.today().year))
    if not (text.isdigit() and len(text) == 4):
        raise InvalidInput("year", f"{text!r} is not a year such as 2026")
    return int(text)


class ReadApi:
    """Paths to answers; no HTTP here, so it is tested without a socket as well."""

    def __init__(self, views: Views) -> None:
        self.views = views
        self.routes: dict[str, Callable[[Query], Any]] = {
            "/balances": lambda q: views.balances(_date(q, "as_of"), _by(q)),
            "/fund-balances": lambda q: views.fund_balances(_date(q, "as_of"), _by(q)),
            "/trial-balance": lambda q: views.trial_balance(_date(q, "as_of")),
            "/roster": lambda q: views.roster(q.get("status")),
            "/report/county": lambda q: views.county_report(_year(q), _date(q, "as_of")),
            "/positions": lambda q: views.positions(),
            # From the fund's own record of them (a few dozen; no view needed).
            "/fixed-deposits": lambda q: views.ledger.fixed_deposits_held(_date(q, "as_of")),
        }

    def answer(self, path: str, query: Query) -> Any:
        if path.startswith("/statement/"):
            return self.views.statement(unquote(path.removeprefix("/statement/")),
                                        _date(query, "as_of"))
        route = self.routes.get(path)
        if route is None:
            raise NotFound("path", path)
        return route(query)


def problem(status: HTTPStatus, title: str, detail: str) -> dict[str, Any]:
    return {"type": "about:blank", "title": title, "status": int(status), "detail": detail}


def make_server(ledger: Ledger, host: str = "127.0.0.1", port: int = 8080) -> HTTPServer:
    api = ReadApi(Views(ledger))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server interface)
            if len(self.path) > MAX_URL_CHARS:
                self._send(HTTPStatus.REQUEST_URI_TOO_LONG, problem(
                    HTTPStatus.REQUEST_URI_TOO_LONG, "URL too long",
                    f"at most {MAX_URL_CHARS} characters"))
                return
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            try:
                body = api.answer(url.path.rstrip("/") or "/", query)
            except InvalidInput as e:
                self._send(HTTPStatus.BAD_REQUEST,
                           problem(HTTPStatus.BAD_REQUEST, "invalid input", str(e)))
            except NotFound as e:
                self._send(HTTPStatus.NOT_FOUND,
                           problem(HTTPStatus.NOT_FOUND, "not found", str(e)))
            except LedgerError as e:
                self._send(HTTPStatus.UNPROCESSABLE_ENTITY,
                           problem(HTTPStatus.UNPROCESSABLE_ENTITY, "refused", str(e)))
            else:
                self._send(HTTPStatus.OK, body)

        def _refuse_method(self) -> None:
            self._send(HTTPStatus.METHOD_NOT_ALLOWED, problem(
                HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed",
                "the API only reads: use GET"), allow="GET")

        do_POST = do_PUT = do_PATCH = do_DELETE = _refuse_method  # noqa: N815

        def _send(self, status: HTTPStatus, body: Any, allow: str | None = None) -> None:
            data = orjson.dumps(body, default=str)
            self.send_response(status)
            kind = "application/problem+json" if status >= 400 else "application/json"
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            if allow:
                self.send_header("Allow", allow)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return None  # the office's proxy keeps the access log

    return HTTPServer((host, port), Handler)


def follow(ledger: Ledger, stop: Event, report: Callable[[str], None]) -> None:
    """Keep the views current until stop is set. The server goes on answering if the runner
    fails (the answers' positions show how far behind they are); the failure is reported
    and the runner starts again after a pause."""
    while not stop.is_set():
        try:
            ProjectionRunner(ledger).run(stop, poll_interval_s=POLL_INTERVAL_S)
        except Exception as e:  # reported, then retried: a long-running service
            report(f"projection runner failed: {type(e).__name__}: {e}; retrying in "
                   f"{RETRY_AFTER_S:.0f} s")
            stop.wait(RETRY_AFTER_S)


def serve(ledger: Ledger, host: str, port: int, ready: Callable[[str], None],
          report: Callable[[str], None] = print) -> None:
    """Serve until interrupted, with a projection runner following the log beside it."""
    stop = Event()
    runner = Thread(target=follow, args=(ledger, stop, report), name="projections",
                    daemon=True)
    server = make_server(ledger, host, port)
    runner.start()
    host_bound, port_bound = server.server_address[:2]
    ready(f"http://{host_bound!s}:{port_bound}")
    try:
        server.serve_forever()
    finally:
        stop.set()
        server.server_close()
        runner.join(timeout=10)
