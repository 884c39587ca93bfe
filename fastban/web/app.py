"""fastban web: the operator's page (MikoPBX's "Anti brute force" screen) and /metrics.

A process of its own (aiohttp), so that serving the page never takes time from the capture
and ban path; it reaches the guard over the control socket, so the kernel keeps one owner.

Security, in the order a request meets it:
  * it listens on loopback unless TLS and a password are both set (`check_listen`);
  * it answers only the Host names it is reached by (its address, localhost on loopback,
    web_server_names): a page on another site that rebinds its name to 127.0.0.1 gets 421;
  * every response forbids framing and foreign scripts (Content-Security-Policy);
  * a POST from another origin is refused; every POST but the login carries the session's
    CSRF token (header X-CSRF-Token, or the form field csrf); the login form carries a token
    of its own, bound to a cookie;
  * the session cookie is HttpOnly and SameSite=Strict (and Secure over TLS);
  * a wrong password is counted by the guard like a failed SIP login: at maxretry the address
    is banned in XDP, and a banned address cannot log in here either;
  * the page builds every dynamic text with textContent: a reason or a label is never markup.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import html
import ipaddress
import logging
import os
import secrets
import ssl
import time
from importlib import resources

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from fastban import control
from fastban.config import ConfigError, load_settings, parse_listen
from fastban.web import passwords
from fastban.web.guard_link import GuardLink, GuardUnavailable
from fastban.web.metrics import registry_for, render
from fastban.web.sessions import Sessions
from fastban.web.files import write_atomically
from fastban.web.settings_form import check_form, page_values

log = logging.getLogger("fastban.web")

SESSION_COOKIE = "fastban_session"
LOGIN_COOKIE = "fastban_login"
CSRF_HEADER = "X-CSRF-Token"
FAILED_LOGIN_DELAY = 1.0       # seconds before a wrong password is answered
BANS_SHOWN = 500               # the page lists the newest bans; `fastban list` shows all
MAX_BODY = 64 * 1024
STATIC = resources.files("fastban.web") / "static"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self'; connect-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",     # "no-referrer" makes a form's Origin "null"
    "Cache-Control": "no-store",
}


class WebError(Exception):
    """fastban web cannot start: one line for the operator."""


def is_loopback(listen: str) -> bool:
    return ipaddress.ip_address(parse_listen(listen)[0]).is_loopback


def check_listen(settings, password_hash: str | None) -> None:
    """Refuses a listener off loopback unless TLS and a password are both configured."""
    for name in ("web_listen", "metrics_listen"):
        listen = getattr(settings, name)
        if listen and not is_loopback(listen) and not (settings.web_tls_cert and password_hash):
            raise WebError(f"{name} {listen} is not a loopback address: set web_tls_cert, "
                           "web_tls_key and a password (fastban web-password) to serve it "
                           "there")


def tls_context(settings) -> ssl.SSLContext | None:
    if not settings.web_tls_cert:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.web_tls_cert, settings.web_tls_key)
    except (OSError, ssl.SSLError) as error:
        raise WebError(f"web_tls_cert/web_tls_key: cannot load {settings.web_tls_cert} and "
                       f"{settings.web_tls_key}: {error}") from None
    return context


def host_headers(listen: str, names=(), tls: bool = False) -> frozenset:
    """The Host headers a request to this listener may carry: its address, localhost on
    loopback, and the configured names; anything else is a DNS-rebinding page's request."""
    address, port = parse_listen(listen)
    hosts = {f"[{address}]" if ":" in address else address, *names}
    if ipaddress.ip_address(address).is_loopback:
        hosts.add("localhost")
    default_port = 443 if tls else 80
    return frozenset({f"{host}:{port}" for host in hosts} |
                     (hosts if port == default_port else set()))


def client_address(request: web.Request) -> str:
    """The peer of the connection (never a forwarded-for header), IPv4-mapped made IPv4."""
    address = ipaddress.ip_address(request.remote)
    return str(getattr(address, "ipv4_mapped", None) or address)


def _template(name: str, **values: str) -> str:
    text = (STATIC / name).read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", html.escape(value, quote=True))
    return text


class Page:
    """The handlers, with what they share: the guard link, the sessions, the password."""

    def __init__(self, link: GuardLink, password_hash: str, *, secure: bool):
        self.link, self.password_hash, self.secure = link, password_hash, secure
        self.sessions = Sessions()
        self.registry = registry_for(lambda: link.call_now("stats"))
        self._metrics_credential: bytes | None = None   # digest of the last good basic auth

    # -- the pieces every handler uses ----------------------------------------------------

    def session(self, request: web.Request):
        return self.sessions.get(request.cookies.get(SESSION_COOKIE), time.monotonic())

    def _cookie(self, response: web.StreamResponse, name: str, value: str, max_age=None):
        response.set_cookie(name, value, httponly=True, samesite="Strict", secure=self.secure,
                            path="/", max_age=max_age)

    async def _password_ok(self, password: str) -> bool:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, passwords.verify, password, self.password_hash)

    async def _banned(self, address: str) -> bool:
        try:
            return (await self.link.call("banned", address=address))["banned"]
        except GuardUnavailable:
            return False

    async def _login_failed(self, address: str) -> None:
        try:
            answer = await self.link.call("web_login_failed", address=address)
        except (GuardUnavailable, control.ControlError) as error:
            log.warning("wrong web password from %s, not counted: %s", address, error)
        else:
            log.warning("wrong web password from %s (%d counted%s)", address,
                        answer["failures"], ", banned" if answer["banned"] else "")
        await asyncio.sleep(FAILED_LOGIN_DELAY)

    # -- login ----------------------------------------------------------------------------

    async def login_page(self, request: web.Request, message: str = "", status: int = 200):
        if self.session(request) and request.method == "GET":
            raise web.HTTPSeeOther("/")
        token = secrets.token_urlsafe(32)
        response = web.Response(text=_template("login.html", csrf=token, message=message),
                                content_type="text/html", status=status)
        self._cookie(response, LOGIN_COOKIE, token, max_age=900)
        return response

    async def login(self, request: web.Request):
        form = await request.post()
        token, expected = form.get("csrf"), request.cookies.get(LOGIN_COOKIE)
        if not isinstance(token, str) or not expected or \
                not hmac.compare_digest(token.encode(), expected.encode()):
            return await self.login_page(request, "The login form expired: try again.", 403)
        address = client_address(request)
        if await self._banned(address):
            return await self.login_page(request, "This address is blocked.", 403)
        password = form.get("password")
        if isinstance(password, str) and await self._password_ok(password):
            session = self.sessions.start(time.monotonic(), address)
            log.info("web login from %s", address)
            response = web.HTTPSeeOther("/")
            self._cookie(response, SESSION_COOKIE, session.id)
            response.del_cookie(LOGIN_COOKIE, path="/")
            raise response
        await self._login_failed(address)
        return await self.login_page(request, "Wrong password.", 401)

    async def logout(self, request: web.Request):
        self.sessions.end(request.cookies.get(SESSION_COOKIE))
        response = web.HTTPSeeOther("/login")
        response.del_cookie(SESSION_COOKIE, path="/")
        raise response

    # -- the page and its data ------------------------------------------------------------

    async def index(self, request: web.Request):
        session = self.session(request)
        if session is None:
            raise web.HTTPSeeOther("/login")
        return web.Response(text=_template("index.html", csrf=session.csrf),
                            content_type="text/html")

    async def overview(self, request: web.Request):
        link = self.link
        try:
            stats = await link.call("stats")
            bans = await link.call("list", newest=BANS_SHOWN)
            history = await link.call("history")
            about = await link.call("settings")
        except GuardUnavailable as error:
            return web.json_response({"error": str(error)}, status=503)
        settings, settings_error = {}, ""
        if about["config_path"]:
            try:
                settings = page_values(load_settings(about["config_path"]))
            except ConfigError as error:
                settings_error = str(error)
        else:
            settings_error = "the guard runs without a settings file: the page cannot change it"
        return web.json_response({
            "now": time.time(), "stats": stats, "bans": bans, "bans_shown": BANS_SHOWN,
            "history": history, "settings": settings, "settings_error": settings_error,
            "overridden": about["overridden"],
        })

    async def save_settings(self, request: web.Request):
        submitted = await _json_object(request)
        if not all(isinstance(v, str) for v in submitted.values()):
            return web.json_response({"errors": {"_form": "every field is text"}}, status=400)
        try:
            path = (await self.link.call("settings"))["config_path"]
        except GuardUnavailable as error:
            return web.json_response({"errors": {"_form": str(error)}}, status=503)
        if not path:
            return web.json_response({"errors": {"_form": "the guard runs without a settings "
                                                 "file: the page cannot change it"}}, status=409)
        try:
            with open(path, encoding="utf-8") as source:
                before = source.read()
        except (OSError, UnicodeDecodeError) as error:
            return web.json_response({"errors": {"_form": f"cannot read {path}: {error}"}},
                                     status=500)
        result = check_form(submitted, before)
        if result.errors:
            return web.json_response({"errors": result.errors}, status=400)
        if result.text != before:
            try:
                write_atomically(path, result.text)
                await self.link.call("reload")
            except (OSError, control.ControlError, GuardUnavailable) as error:
                write_atomically(path, before)
                return web.json_response({"errors": {"_form": f"not saved: {error}"}},
                                         status=500)
            log.info("settings saved from the page by %s: %s", client_address(request),
                     ", ".join(f"{k} = {v}" for k, v in sorted(submitted.items())))
        return web.json_response({"saved": result.text != before})

    async def ban(self, request: web.Request):
        body = await _json_object(request)
        duration = body.get("duration")
        if duration in (None, ""):
            duration = None
        else:
            try:
                duration = float(duration)
            except (TypeError, ValueError):
                return web.json_response(
                    {"error": "block for: seconds, 0 for ever, or empty for bantime"},
                    status=400)
        try:
            record = await self.link.call("ban", target=str(body.get("target", "")),
                                          duration=duration, reason=body.get("reason"))
        except control.ControlError as error:
            return web.json_response({"error": str(error)}, status=400)
        log.info("ban %s from the page by %s", record["target"], client_address(request))
        return web.json_response(record)

    async def unban(self, request: web.Request):
        body = await _json_object(request)
        try:
            answer = await self.link.call("unban", target=str(body.get("target", "")))
        except control.ControlError as error:
            return web.json_response({"error": str(error)}, status=400)
        if answer["removed"]:
            log.info("unban %s from the page by %s", body.get("target"), client_address(request))
        return web.json_response(answer)

    # -- /metrics -------------------------------------------------------------------------

    async def metrics(self, request: web.Request, open_: bool = False):
        if not open_ and not await self._metrics_allowed(request):
            return web.Response(status=401, text="the page's password is needed\n",
                                headers={"WWW-Authenticate": 'Basic realm="fastban"'})
        body = await asyncio.get_running_loop().run_in_executor(None, render, self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _metrics_allowed(self, request: web.Request) -> bool:
        if self.session(request):
            return True
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        digest = hashlib.sha256(header.encode()).digest()
        if self._metrics_credential and hmac.compare_digest(digest, self._metrics_credential):
            return True
        address = client_address(request)
        if await self._banned(address):
            return False
        try:
            _, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            password = None
        if password is not None and await self._password_ok(password):
            self._metrics_credential = digest
            return True
        await self._login_failed(address)
        return False


async def _json_object(request: web.Request) -> dict:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="the body is not JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="the body is not a JSON object")
    return body


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    return origin is None or origin == f"{request.scheme}://{request.host}"


def _middlewares(page: Page, hosts: frozenset | None):
    @web.middleware
    async def known_host(request, handler):
        if hosts is not None and request.host.lower() not in hosts:
            return web.Response(status=421, text="this server is not reached by that name "
                                "(add it to web_server_names)\n")
        return await handler(request)

    @web.middleware
    async def headers(request, handler):
        try:
            response = await handler(request)
        except web.HTTPException as exception:
            response = exception
        response.headers.update(SECURITY_HEADERS)
        if isinstance(response, web.HTTPException) and response.status >= 300:
            raise response
        return response

    @web.middleware
    async def guard_changes(request, handler):
        """Every POST: same origin; every POST but the login: a session and its CSRF token."""
        if request.method == "POST":
            if not _same_origin(request):
                return web.json_response({"error": "a request from another site"}, status=403)
            if request.path != "/login":
                session = page.session(request)
                if session is None:
                    return web.json_response({"error": "log in first"}, status=401)
                token = request.headers.get(CSRF_HEADER)
                if token is None and request.content_type == "application/x-www-form-urlencoded":
                    token = (await request.post()).get("csrf")
                if not session.csrf_matches(token):
                    log.warning("POST %s from %s without its CSRF token: refused", request.path,
                                client_address(request))
                    return web.json_response({"error": "missing or wrong CSRF token"},
                                             status=403)
        elif request.path.startswith("/api/") and page.session(request) is None:
            return web.json_response({"error": "log in first"}, status=401)
        return await handler(request)
    return [known_host, headers, guard_changes]


def make_app(page: Page, *, with_page: bool = True, with_metrics: bool = True,
             metrics_open: bool = False, hosts: frozenset | None = None) -> web.Application:
    """The page's application, with /metrics or without; with_page False: /metrics alone
    (metrics_listen). metrics_open: /metrics asks for no password. hosts: the Host headers
    it answers (host_headers); None: any."""
    app = web.Application(middlewares=_middlewares(page, hosts), client_max_size=MAX_BODY)
    if with_metrics:
        app.router.add_get("/metrics", functools.partial(page.metrics, open_=metrics_open))
    if with_page:
        app.router.add_get("/", page.index)
        app.router.add_get("/login", page.login_page)
        app.router.add_post("/login", page.login)
        app.router.add_post("/logout", page.logout)
        app.router.add_get("/api/overview", page.overview)
        app.router.add_post("/api/settings", page.save_settings)
        app.router.add_post("/api/ban", page.ban)
        app.router.add_post("/api/unban", page.unban)
        app.router.add_static("/static/", os.fspath(STATIC), follow_symlinks=False)
    return app


async def serve(settings, stop: asyncio.Event) -> None:
    """Serves the page (and /metrics) until `stop` is set."""
    password_hash = passwords.read_hash(settings.web_password_file)
    check_listen(settings, password_hash)
    context = tls_context(settings)
    page = Page(GuardLink(settings.control_socket), password_hash, secure=context is not None)
    metrics_listen = settings.metrics_listen or settings.web_listen
    metrics_open = not settings.metrics_auth and is_loopback(metrics_listen)
    runners = []
    names, tls = settings.web_server_names, context is not None
    listeners = [(make_app(page, with_metrics=not settings.metrics_listen,
                           metrics_open=metrics_open,
                           hosts=host_headers(settings.web_listen, names, tls)),
                  settings.web_listen, context)]
    if settings.metrics_listen:
        listeners.append((make_app(page, with_page=False, metrics_open=metrics_open,
                                   hosts=host_headers(settings.metrics_listen, names, tls)),
                          settings.metrics_listen, context))
    try:
        for app, listen, tls in listeners:
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            runners.append(runner)
            host, port = parse_listen(listen)
            try:
                await web.TCPSite(runner, host, port, ssl_context=tls).start()
            except OSError as error:
                raise WebError(f"cannot listen on {listen}: {error.strerror}") from None
            serves = "/metrics" if listen is settings.metrics_listen else \
                "the page" + ("" if settings.metrics_listen else " and /metrics")
            log.info("serving %s on %s://%s", serves, "https" if tls else "http", listen)
        await stop.wait()
    finally:
        for runner in runners:
            await runner.cleanup()
