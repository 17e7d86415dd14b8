"""The HTTP session under the DICOMweb client: credentials, verified TLS, timeouts, retries, limits, errors.

Why apart: these are the rules a hospital network imposes, the same for every request.
Credentials never come from the command line: `MAMMOSEG_DICOMWEB_TOKEN` (a bearer token),
or `MAMMOSEG_DICOMWEB_USER` + `MAMMOSEG_DICOMWEB_PASSWORD`, or a netrc file (the one given,
else `~/.netrc`) with an entry for the server's host. TLS is verified; a CA bundle is added
to the default trust, not put in its place. urllib3's `Retry` repeats a request on
connection and read errors and on HTTP 429/500/502/503/504, with exponential back-off and
Retry-After honoured (each wait at most 30 s). The session's adapter also keeps the
limits of `mammoseg.dicomweb.limits` on every request: the deadline per attempt (a watch on
each connection it opens) and the size of answers it reads into memory.
"""

from __future__ import annotations

import netrc
import os
import re
import ssl
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mammoseg.dicomweb.limits import MAX_WAIT_S, DeadlineExceeded, Limits, Watch, iter_answer
from mammoseg.version import __version__

try:  # the optional extra
    import certifi
    from requests import Session
    from requests.adapters import HTTPAdapter
    from requests.auth import HTTPBasicAuth
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
    from urllib3.util.retry import Retry
except ImportError as _missing:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"DICOMweb access needs dicomweb-client and requests ({_missing}): pip install 'mammoseg[dicomweb]'"
    ) from _missing

ENV_USER, ENV_PASSWORD, ENV_TOKEN = "MAMMOSEG_DICOMWEB_USER", "MAMMOSEG_DICOMWEB_PASSWORD", "MAMMOSEG_DICOMWEB_TOKEN"
RETRY_STATUS = (429, 500, 502, 503, 504)
#: Redirects followed per request (requests' default, 30, would multiply the time a server can hold it).
MAX_REDIRECTS = 5


class DicomWebError(ValueError):
    """A DICOMweb request that failed; the message is one line: '<server> [instance]: <reason>'.

    A ValueError, as the project's other user-facing errors (DicomReadError), so the command
    line prints it as one line without a traceback. `fatal` marks failures of the server as a
    whole (authentication, connection, TLS), which repeating for the next instance would not cure.
    """

    def __init__(self, message: str, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


def resolve_auth(url: str, netrc_file: str | os.PathLike | None = None,
                 env: Mapping[str, str] | None = None) -> tuple[Any, str]:
    """(requests auth or None, where it came from): token, user/password variables, or netrc."""
    env = os.environ if env is None else env
    host = urlsplit(url).hostname or ""
    if env.get(ENV_TOKEN):
        return _BearerAuth(env[ENV_TOKEN]), ENV_TOKEN
    user, password = env.get(ENV_USER), env.get(ENV_PASSWORD)
    if user or password:
        if not (user and password):
            raise DicomWebError(f"{url}: set both {ENV_USER} and {ENV_PASSWORD} (only one is set)")
        return HTTPBasicAuth(user, password), f"{ENV_USER}/{ENV_PASSWORD}"
    explicit = netrc_file is not None
    path = Path(netrc_file) if explicit else Path.home() / ".netrc"
    if not path.is_file():
        if explicit:
            raise DicomWebError(f"{url}: netrc file {path} does not exist")
        return None, "no credentials"
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except (netrc.NetrcParseError, OSError) as exc:
        raise DicomWebError(f"{url}: cannot read netrc file {path} ({exc})") from exc
    if entry is None:
        if explicit:
            raise DicomWebError(f"{url}: netrc file {path} has no entry for host {host}")
        return None, "no credentials"
    login, _, secret = entry
    return HTTPBasicAuth(login or "", secret or ""), f"netrc file {path}"


class _BearerAuth:
    """`Authorization: Bearer <token>` on every request."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: Any) -> Any:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


def make_session(auth: Any, ca_bundle: str | os.PathLike | None, retries: int, backoff: float,
                 limits: Limits = Limits()) -> Any:
    """A requests Session: auth, verified TLS (plus `ca_bundle`), retries with back-off, `limits` on every request."""
    retry = _Retry(
        total=retries, connect=retries, read=retries, status=retries, other=0,
        backoff_factor=backoff, backoff_max=MAX_WAIT_S, status_forcelist=RETRY_STATUS,
        allowed_methods=None,  # STOW (POST) too: storing the same SOP instance twice is harmless
        respect_retry_after_header=True, raise_on_status=False,
    )
    context = None
    if ca_bundle is not None:
        if not Path(ca_bundle).is_file():
            raise DicomWebError(f"--ca-bundle {ca_bundle}: no such file")
        context = ssl.create_default_context(cafile=certifi.where())
        try:
            context.load_verify_locations(cafile=str(ca_bundle))
        except ssl.SSLError as exc:
            raise DicomWebError(f"--ca-bundle {ca_bundle}: not a PEM certificate file ({exc})") from exc
    session = Session()
    session.max_redirects = MAX_REDIRECTS  # each is a request of its own, with its own deadline
    session.auth = auth
    session.headers["User-Agent"] = f"mammoseg/{__version__}"
    adapter = _Adapter(max_retries=retry, ssl_context=context, limits=limits)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


#: The watch of the request this thread is sending (set by `_Adapter.send`, read by its connections).
_current = threading.local()


def _watch() -> Watch | None:
    return getattr(_current, "watch", None)


class _Retry(Retry):
    """urllib3's Retry, bounded: a server's Retry-After is waited at most MAX_WAIT_S; waits do not count
    against the deadline, and a request whose deadline expired is not tried again."""

    def get_retry_after(self, response: Any) -> float | None:
        seconds = super().get_retry_after(response)
        return None if seconds is None else min(seconds, MAX_WAIT_S)

    def sleep(self, response: Any = None) -> None:
        watch = _watch()
        if watch is not None:
            watch.pause()
            if watch.expired:
                return  # the next attempt is refused at once
        super().sleep(response)


class _WatchedConnection:
    """A connection that tells the current request's watch when an attempt starts and what socket it reads."""

    def connect(self) -> None:
        watch = _watch()
        if watch is not None:
            watch.attempt(self)
        super().connect()  # type: ignore[misc]

    def request(self, *args: Any, **kwargs: Any) -> None:
        watch = _watch()
        if watch is not None:
            watch.attempt(self)
        super().request(*args, **kwargs)  # type: ignore[misc]

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        watch = _watch()
        if watch is not None:
            watch.reading(self.sock)  # type: ignore[attr-defined]
        return super().getresponse(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_WatchedConnection, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_WatchedConnection, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _Adapter(HTTPAdapter):
    """HTTPAdapter that keeps `limits` on every request, and whose pools use `ssl_context` (the default
    trust plus --ca-bundle) when given.

    Every answer is fetched streaming under a `Watch`. A request made with `stream=True` gets
    the response with its watch (`mammoseg_watch`) still running: the caller reads the body with
    `limits.iter_answer` (or ends it with `limits.end_answer`). Any other answer is read here,
    at most `limits.max_answer_bytes`, before the response is returned.
    """

    def __init__(self, *args: Any, ssl_context: ssl.SSLContext | None = None, limits: Limits = Limits(),
                 **kwargs: Any) -> None:
        self._ssl_context = ssl_context
        self._limits = limits
        super().__init__(*args, **kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        if self._ssl_context is not None:
            kwargs["ssl_context"] = self._ssl_context
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS pools have their own connections: the body checks remain
            manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager

    def send(self, request: Any, stream: bool = False, **kwargs: Any) -> Any:
        watch = Watch(self._limits.deadline)
        _current.watch = watch
        try:
            watch.attempt(None)  # the clock runs from here; each connection attempt restarts it
            response = super().send(request, stream=True, **kwargs)
        except Exception as exc:
            watch.finish()
            if watch.expired and not isinstance(exc, DeadlineExceeded):
                raise DeadlineExceeded(watch.message()) from exc
            raise
        finally:
            _current.watch = None
        response.mammoseg_watch = watch
        if not stream:
            try:
                # What requests' own `content` would hold, read within the limits.
                response._content = b"".join(iter_answer(response, self._limits.max_answer_bytes))
                response._content_consumed = True
            finally:
                response.close()
        return response


def checked_url(url: str) -> str:
    """The service URL without a trailing slash; refuses non-HTTP URLs and credentials inside the URL."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DicomWebError(f"{url}: not an http(s) URL of a DICOMweb service")
    if parts.username or parts.password:
        raise DicomWebError(f"{parts.hostname}: credentials in the URL are refused; use {ENV_USER}/"
                            f"{ENV_PASSWORD}, {ENV_TOKEN} or a netrc file")
    return url.strip().rstrip("/")


def root_reason(exc: BaseException) -> str:
    """The innermost cause of a requests/urllib3 error, as short text ('[Errno 111] Connection refused')."""
    reason: BaseException = exc
    for _ in range(6):
        inner = getattr(reason, "reason", None)
        if not isinstance(inner, BaseException):
            inner = next((a for a in getattr(reason, "args", ()) if isinstance(a, BaseException)), None)
        if inner is None:
            break
        reason = inner
    text = " ".join(str(reason).split())
    errno = re.search(r"\[Errno [^\]]+\].*", text)
    return errno.group(0) if errno else text.split("): ", 1)[-1]
