"""The dashboard's HTTP/1.1 connection, sans-IO: requests in (parsed by httptools), answers out -- and, for
``/api/v1/events``, a response that stays open and is written to later (Server-Sent Events).

The stream is the engine's wakeable protocol: the connection asks for a handle (``wakeable``), subscribes it to the
hub, and when the hub has news it wakes the connection, whose ``woken()`` answers the frames it has not sent yet.
A comment line every ``HEARTBEAT`` seconds (a timer on the same handle) keeps proxies and the engine's idle
timeout from taking a quiet stream for a dead one; a reader that lets more than the engine's write buffer pile up
is cut off (its EventSource reconnects and starts again from the news).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httptools

from sockhop.engine.protocol import NOTHING, Address, Reply, StreamProtocol

if TYPE_CHECKING:
    from sockhop.dashboard.app import Dashboard

HEARTBEAT = 15.0
MAX_URL = 8 * 1024
MAX_HEAD = 32 * 1024
MAX_HEADERS = 100
MAX_BODY = 64 * 1024  # deletes carry no body; a form or a JSON body this size is already too much
#: Seconds from a request's first byte to its end: a client trickling bytes (slowloris) gets 408 after that.
REQUEST_TIMEOUT = 20.0


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


class DashboardConnection(StreamProtocol):
    """One browser's (or curl's) connection to the dashboard."""

    wakeable = True

    def __init__(self, app: Dashboard) -> None:
        self.app = app
        self.parser = httptools.HttpRequestParser(self)
        self.handle = None
        self.out: list[bytes] = []
        self.close = False
        self.streaming = False
        self.cursor = 0
        self.in_request = False  # a request has begun and not ended
        self.alarmed = False  # its deadline is set
        self._begin()

    def _begin(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self.head_size = 0
        self.body_size = 0
        self.header_name = b""

    # -- the engine's calls -------------------------------------------------------------------------------------
    def attach(self, handle) -> None:
        self.handle = handle

    def connection_made(self, peer: Address, local: Address) -> Reply:
        return NOTHING

    def data_received(self, data: bytes) -> Reply:
        if self.streaming or self.close:
            return NOTHING  # a stream's client has nothing more to say; after a close, nothing is read
        self.out = []
        try:
            self.parser.feed_data(data)
        except _Refused as exc:
            self._refuse(exc.status, exc.message)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Refused):
                self._refuse(cause.status, cause.message)
            elif not self.close:
                self._refuse(400, "malformed request")
        except httptools.HttpParserUpgrade:
            self._refuse(400, "no upgrades here")
        except httptools.HttpParserError:
            if not self.close:
                self._refuse(400, "malformed request")
        alarm = None
        if self.in_request and not self.alarmed and not self.close:
            alarm, self.alarmed = REQUEST_TIMEOUT, True
        elif self.alarmed and not self.in_request:
            alarm, self.alarmed = 0.0, False
        return Reply(tuple(self.out), close=self.close, alarm=alarm)

    def eof_received(self) -> Reply:
        return Reply(close=True)

    def woken(self) -> Reply:
        if not self.streaming:
            return NOTHING
        if self.handle is not None and self.handle.backed_up:
            return Reply(close=True)  # a reader this far behind starts again when its EventSource reconnects
        news, self.cursor = self.app.hub.since(self.cursor)
        return Reply((news,)) if news else NOTHING

    def timed_out(self) -> Reply:
        if self.in_request:  # a request begun and never finished: say so (the engine closes the connection)
            return Reply(tuple(self.app.wire(_error(408, "the request took too long"), close=True)))
        return NOTHING  # an idle keep-alive connection ends silently; a stream is kept alive by its heartbeat

    def stop_requested(self) -> Reply:
        return Reply(close=True)

    def connection_lost(self) -> None:
        if self.streaming and self.handle is not None:
            self.app.hub.unsubscribe(self.handle)

    def _heartbeat(self) -> Reply:
        if self.handle is None or self.handle.closed:
            return NOTHING
        self.handle.call_later(HEARTBEAT, self._heartbeat)
        return Reply((b": heartbeat\n\n",))

    # -- httptools' callbacks ------------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._begin()
        self.in_request = True

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > MAX_URL:
            raise _Refused(414, "the request target is too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_size += len(name) + len(value)
        if self.head_size > MAX_HEAD or len(self.headers) >= MAX_HEADERS:
            raise _Refused(431, "the request's header fields are too large")
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        length = self.headers.get("content-length", "0")
        if not length.isdigit() or int(length) > MAX_BODY:
            raise _Refused(413, "the request body is too large")

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.body_size > MAX_BODY:
            raise _Refused(413, "the request body is too large")

    def on_message_complete(self) -> None:
        self.in_request = False
        if self.close or self.streaming:
            return
        method = self.parser.get_method().decode("latin-1")
        keep_alive = self.parser.should_keep_alive()
        answer = self.app.respond(method, self.url.decode("latin-1"), self.headers)
        if getattr(answer, "stream", False):
            self.streaming = True
            self.out.append(self.app.stream_head())
            if self.handle is not None:
                self.cursor = self.app.hub.subscribe(self.handle)
                self.handle.call_later(HEARTBEAT, self._heartbeat)
            self.out.append(self.app.hub.snapshot())
            return
        close = not keep_alive or answer.status >= 400 and answer.status not in (401, 403, 404, 405)
        self.out.extend(self.app.wire(answer, head=method == "HEAD", close=close))
        if close:
            self.close = True

    def _refuse(self, status: int, message: str) -> None:
        self.out.extend(self.app.wire(_error(status, message), close=True))
        self.close = True


def _error(status: int, message: str):
    from sockhop.dashboard.app import error  # app.py imports this module

    return error(status, message)
