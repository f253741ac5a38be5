"""The console's pages: aiohttp handlers that render Jinja2 templates.

Every page is plain HTML that reads without JavaScript; htmx (bundled under
``static/``) only refreshes the live parts. Each handler is wrapped by :func:`_page`,
which finds the session, sends a browser without one to the sign-in form, checks the
role, and on every POST the session's CSRF token.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode
from uuid import UUID

import jinja2
from aiohttp import web

from saga.access import ApiConfig, Role
from saga.console import _data as data
from saga.console._present import (
    ACTIONS,
    PROGRESS,
    ago,
    chart_svg,
    describe,
    dry_run,
    graph_svg,
    offered_actions,
    pretty_json,
    quiet,
    reason_of,
)
from saga.console._session import COOKIE, Session, Sessions
from saga.coordinator import DefinitionCache, breaker_reports
from saga.dlq import DeadLetterHandled, DeadLetterNotFound, DeadLetters, parse_ref
from saga.engine import SagaState
from saga.errors import InvalidCommand, SagaError, SagaNotFound, TransitionError
from saga.ids import AmbiguousId, resolve_saga_id, short_id
from saga.operations import SagaOperations
from saga.store import SqlStore
from saga.telemetry import format_trace_id, saga_trace_id

log = logging.getLogger("saga.console")

HERE = Path(__file__).resolve().parent
PREFIX = "/ui"

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
"""Only the console's own bundled files; nothing inline, nothing from elsewhere."""


@dataclass(frozen=True, kw_only=True)
class Console:
    """What the pages need: operations, store, sessions, templates, Kafka."""

    ops: SagaOperations
    sessions: Sessions
    templates: jinja2.Environment
    bootstrap: str | None

    @property
    def store(self) -> SqlStore:
        """The saga store."""
        return self.ops.store

    @property
    def definitions(self) -> DefinitionCache:
        """Definitions over the store."""
        return self.ops.definitions

    def dead_letters(self) -> DeadLetters | None:
        """The DLQ topic, when Kafka is configured."""
        if not self.bootstrap:
            return None
        return DeadLetters(self.bootstrap, self.ops.topics, self.store, clock=self.ops.clock)


CONSOLE = web.AppKey("console", Console)
SESSION = web.RequestKey("console_session", Session)

Page = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -- rendering --------------------------------------------------------------------------------


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _time(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%H:%M:%S.%f")[:12] if value else ""


def templates() -> jinja2.Environment:
    """The Jinja2 environment of the console's templates (autoescaped)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(short=short_id, when=_when, time=_time, pretty=pretty_json)
    return env


def _headers(response: web.StreamResponse) -> web.StreamResponse:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def render(request: web.Request, template: str, status: int = 200, **ctx: Any) -> web.Response:
    """Render ``template`` with the session and navigation in the context."""
    console = request.app[CONSOLE]
    session = request.get(SESSION)
    body = console.templates.get_template(template).render(
        request=request,
        session=session,
        can_operate=session is not None and session.principal.role is Role.OPERATOR,
        needs_sign_in=console.sessions.needs_sign_in,
        now=datetime.now(UTC),
        prefix=PREFIX,
        **ctx,
    )
    response = web.Response(text=body, status=status, content_type="text/html", charset="utf-8")
    _headers(response)
    return response


def _problem(request: web.Request, status: int, title: str, message: str) -> web.Response:
    return render(request, "problem.html", status=status, title=title, message=message)


def _cookie(request: web.Request, response: web.StreamResponse, value: str, max_age: int) -> None:
    response.set_cookie(
        COOKIE,
        value,
        path=f"{PREFIX}/",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
        max_age=max_age,
    )


def _page(role: Role = Role.VIEWER) -> Callable[[Page], Page]:
    """Wrap a handler: session (or sign-in), role, and the CSRF check on POST."""

    def wrap(handler: Page) -> Page:
        async def run(request: web.Request) -> web.StreamResponse:
            console = request.app[CONSOLE]
            session = console.sessions.session(request.cookies.get(COOKIE))
            fresh: str | None = None
            if session is None and not console.sessions.needs_sign_in:
                fresh = console.sessions.sign_in(None)
                session = console.sessions.session(fresh)
            if session is None:
                if request.method == "GET":
                    target = quote(request.path_qs, safe="/?=&")
                    raise web.HTTPSeeOther(f"{PREFIX}/sign-in?next={target}")
                return _problem(request, 401, "Sign in first", "Your session has ended.")
            request[SESSION] = session
            if request.method == "POST":
                form = await request.post()
                presented = form.get("csrf") or request.headers.get("X-CSRF-Token")
                if fresh is not None or not console.sessions.csrf_ok(
                    session, presented if isinstance(presented, str) else None
                ):
                    log.warning(
                        "console: refused a POST to %s without a valid CSRF token", request.path
                    )
                    return _problem(
                        request,
                        403,
                        "Request refused",
                        "This form was not sent from a page of this console (missing or "
                        "wrong CSRF token). Reload the page and try again.",
                    )
            if not session.principal.role.allows(role):
                return _problem(
                    request,
                    403,
                    "Not allowed",
                    f"{session.principal.name} is a {session.principal.role}; "
                    f"this needs the {role} role.",
                )
            try:
                response = await handler(request)
            except SagaNotFound as exc:
                response = _problem(request, 404, "Not found", exc.message)
            if fresh is not None:
                _cookie(request, response, fresh, console.sessions.ttl_s)
            return response

        run.__name__ = handler.__name__
        run.__doc__ = handler.__doc__
        return run

    return wrap


# -- sign in / out ----------------------------------------------------------------------------


def _safe_next(value: Any) -> str:
    text = value if isinstance(value, str) else ""
    if not text.startswith(f"{PREFIX}/") or text.startswith("//") or "\\" in text:
        return f"{PREFIX}/sagas"
    return text


async def sign_in_form(request: web.Request) -> web.StreamResponse:
    """The sign-in form: paste a bearer token of ``SAGA_API_TOKENS``."""
    console = request.app[CONSOLE]
    if not console.sessions.needs_sign_in:
        raise web.HTTPSeeOther(_safe_next(request.query.get("next")))
    return render(request, "sign_in.html", next=_safe_next(request.query.get("next")), error=None)


async def sign_in(request: web.Request) -> web.StreamResponse:
    """Check the posted token and start a session (the token is never stored)."""
    console = request.app[CONSOLE]
    form = await request.post()
    target = _safe_next(form.get("next"))
    token = form.get("token")
    cookie = console.sessions.sign_in(token if isinstance(token, str) else None)
    if cookie is None:
        log.warning("console: sign-in with an unknown token from %s", request.remote)
        return render(
            request, "sign_in.html", status=401, next=target, error="That token is not known."
        )
    session = console.sessions.session(cookie)
    assert session is not None
    log.info("console: %s signed in (%s)", session.principal.name, session.principal.role)
    response = web.HTTPSeeOther(target)
    _cookie(request, response, cookie, console.sessions.ttl_s)
    raise response


@_page()
async def sign_out(request: web.Request) -> web.StreamResponse:
    """End the session (the cookie is removed)."""
    response = web.HTTPSeeOther(f"{PREFIX}/sign-in")
    response.del_cookie(COOKIE, path=f"{PREFIX}/")
    raise response


async def home(request: web.Request) -> web.StreamResponse:
    """``/ui/``: the saga list."""
    raise web.HTTPFound(f"{PREFIX}/sagas")


# -- sagas ------------------------------------------------------------------------------------


def _date(value: str) -> datetime | None:
    if not value.strip():
        return None
    try:
        ts = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


@_page()
async def sagas(request: web.Request) -> web.StreamResponse:
    """The saga list: filters, id search, counts per status, cursor pages, live refresh."""
    console = request.app[CONSOLE]
    q = request.query
    names = ("status", "type", "version", "from", "to", "correlation", "key", "q", "cursor", "live")
    text = {k: q.get(k, "").strip() for k in names}
    key_field, _, key_value = text["key"].partition("=")
    errors = []
    version = int(text["version"]) if text["version"].isdigit() else None
    if text["version"] and version is None:
        errors.append("version must be a number")
    created_from, created_to = _date(text["from"]), _date(text["to"])
    for name, raw, parsed in (("from", text["from"], created_from), ("to", text["to"], created_to)):
        if raw and parsed is None:
            errors.append(f"{name}: not a date/time (e.g. 2026-05-01 or 2026-05-01T12:00)")
    if text["key"] and not key_value:
        errors.append("business key: write field=value, e.g. order_id=o-17")
    if text["status"] and text["status"] not in data.STATUSES:
        errors.append(f"unknown status {text['status']!r}")
    fragment = text["q"]
    if fragment:
        try:
            found = await resolve_saga_id(console.store, fragment)
        except AmbiguousId:
            found = None
        except SagaNotFound:
            found = None
        if found is not None and not any(text[k] for k in ("status", "type", "key", "correlation")):
            raise web.HTTPSeeOther(f"{PREFIX}/sagas/{found}")
    f = data.SagaFilter(
        status=text["status"] if text["status"] in data.STATUSES else None,
        saga_type=text["type"] or None,
        version=version,
        created_from=created_from,
        created_to=created_to,
        correlation_id=text["correlation"] or None,
        key_field=key_field.strip() or None,
        key_value=key_value.strip() if key_value else None,
        id_fragment=fragment or None,
    )
    try:
        listing = await data.list_sagas(console.store, f, cursor=text["cursor"] or None)
    except ValueError:
        errors.append("that page link is no longer valid; starting from the newest")
        listing = await data.list_sagas(console.store, f)
    keep = {k: v for k, v in text.items() if v and k not in ("cursor", "status")}
    status_links = [
        (
            s,
            n,
            f"?{urlencode({**keep, 'status': s})}"
            if s != text["status"]
            else f"?{urlencode(keep)}",
        )
        for s, n in data.status_totals(listing.counts)
    ]
    next_link = (
        f"?{urlencode({**{k: v for k, v in text.items() if v}, 'cursor': listing.next_cursor})}"
        if listing.next_cursor
        else None
    )
    types = sorted({n for n, _ in await console.store.list_definitions()})
    return render(
        request,
        "sagas.html",
        f=text,
        listing=listing,
        status_links=status_links,
        total=sum(listing.counts.values()),
        next_link=next_link,
        first_link=f"?{urlencode({k: v for k, v in text.items() if v and k != 'cursor'})}",
        types=types,
        statuses=data.STATUSES,
        errors=errors,
        live=text["live"] != "0",
        ago=ago,
    )


async def _saga_id(request: web.Request) -> UUID:
    console = request.app[CONSOLE]
    raw = request.match_info["saga_id"]
    try:
        return UUID(raw)
    except ValueError:
        pass
    found = await resolve_saga_id(console.store, raw)  # SagaNotFound -> 404 page
    raise web.HTTPFound(request.path.replace(raw, str(found), 1))


@_page()
async def saga(request: web.Request) -> web.StreamResponse:
    """One saga: header, graph with progress, timeline, attempts, data, audit check."""
    console = request.app[CONSOLE]
    saga_id = await _saga_id(request)
    detail = await console.ops.get_saga(saga_id)
    row = await console.store.get_saga(str(saga_id))
    assert row is not None
    state = SagaState.model_validate_json(row.state_json)
    definition = await console.definitions.get(detail.saga_type, detail.saga_version)
    now = datetime.now(UTC)
    actions = offered_actions(state, definition, now) if definition else []
    outputs = {
        s.name: state.steps[s.name].output for s in detail.steps if state.steps[s.name].output
    }
    timeline = [
        {"r": r, "text": describe(r), "reason": reason_of(r), "quiet": quiet(r)}
        for r in detail.timeline
    ]
    return render(
        request,
        "saga.html",
        d=detail,
        state=state,
        definition=definition,
        graph=graph_svg(definition, state) if definition else None,
        legend=PROGRESS,
        timeline=timeline,
        actions=actions,
        outputs=outputs,
        trace_id=format_trace_id(saga_trace_id(saga_id)),
        sent=request.query.get("sent"),
        live=detail.status in ("running", "compensating", "stuck"),
        ago=ago,
    )


@_page(Role.OPERATOR)
async def action(request: web.Request) -> web.StreamResponse:
    """An operator verb: the engine's dry run and a reason (GET), then the verb (POST)."""
    console = request.app[CONSOLE]
    saga_id = await _saga_id(request)
    slug = request.match_info["action"]
    if slug not in ACTIONS:
        return _problem(request, 404, "Not found", f"no operator verb {slug!r}")
    verb, takes_step, label = ACTIONS[slug]
    form = await request.post() if request.method == "POST" else None
    step_raw = (form or request.query).get("step")
    step = step_raw if isinstance(step_raw, str) and step_raw else None
    if takes_step and step is None:
        return _problem(request, 400, "Which step?", f"{label} needs a step")
    if not takes_step:
        step = None
    detail = await console.ops.get_saga(saga_id)
    row = await console.store.get_saga(str(saga_id))
    assert row is not None
    state = SagaState.model_validate_json(row.state_json)
    definition = await console.definitions.get(state.saga_type, state.saga_version)
    if definition is None:
        return _problem(
            request, 409, "Unknown definition", f"{state.saga_type} v{state.saga_version}"
        )
    session = request[SESSION]
    reason = ""
    error = None
    status = 200
    if form is not None:
        raw = form.get("reason")
        reason = raw.strip() if isinstance(raw, str) else ""
        if not reason:
            error, status = "Give a reason: it is written to the audit log.", 422
        else:
            try:
                accepted = await console.ops.command(
                    saga_id, verb, reason=reason, actor=session.principal.name, step=step
                )
            except (TransitionError, InvalidCommand) as exc:
                error, status = f"The engine refused it: {exc.message}", 409
            else:
                log.info(
                    "console: %s asked to %s saga %s (%s): %s",
                    session.principal.name, verb, saga_id, step or "-", reason,
                )  # fmt: skip
                raise web.HTTPSeeOther(
                    f"{PREFIX}/sagas/{saga_id}?{urlencode({'sent': str(accepted.message_id)})}"
                )
    preview = dry_run(
        state,
        definition,
        verb,
        step=step,
        actor=session.principal.name,
        reason=reason or "(your reason)",
        now=datetime.now(UTC),
    )
    return render(
        request,
        "action.html",
        status=status,
        d=detail,
        slug=slug,
        label=label,
        verb=verb,
        step=step,
        preview=preview,
        reason=reason,
        error=error,
    )


@_page()
async def attention(request: web.Request) -> web.StreamResponse:
    """Stuck sagas and sagas waiting on a paused participant, with the verbs for each."""
    console = request.app[CONSOLE]
    items = await data.needs_attention(console.store, console.definitions)
    now = datetime.now(UTC)
    rows = []
    for item in items:
        definition = await console.definitions.get(item.state.saga_type, item.state.saga_version)
        rows.append(
            {
                "a": item,
                "actions": offered_actions(item.state, definition, now) if definition else [],
            }
        )
    return render(
        request,
        "attention.html",
        rows=rows,
        paused=data.paused_participants(items),
        ago=ago,
    )


# -- dead letters -----------------------------------------------------------------------------


@_page()
async def dead_letters(request: web.Request) -> web.StreamResponse:
    """The DLQ topic, newest first; handled ones hidden unless ``?all=1``."""
    console = request.app[CONSOLE]
    dlq = console.dead_letters()
    show_all = request.query.get("all") == "1"
    records, error = [], None
    if dlq is None:
        error = "Kafka is not configured for this API (KAFKA_BOOTSTRAP_SERVERS)."
    else:
        try:
            records = await dlq.recent(limit=200, include_handled=show_all)
        except SagaError as exc:
            error = f"Kafka cannot be read: {exc.message}"
    return render(
        request,
        "dead_letters.html",
        records=records,
        error=error,
        show_all=show_all,
        topic=console.ops.topics.dlq,
    )


@_page()
async def dead_letter(request: web.Request) -> web.StreamResponse:
    """One dead letter: reason, origin, headers, payload; replay or discard it."""
    console = request.app[CONSOLE]
    dlq = console.dead_letters()
    if dlq is None:
        return _problem(request, 503, "Kafka not configured", "KAFKA_BOOTSTRAP_SERVERS is unset.")
    try:
        partition, offset = parse_ref(request.match_info["ref"])
    except ValueError as exc:
        return _problem(request, 404, "Not found", str(exc))
    error = None
    status = 200
    if request.method == "POST":
        if request[SESSION].principal.role is not Role.OPERATOR:
            return _problem(request, 403, "Not allowed", "This needs the operator role.")
        form = await request.post()
        raw = form.get("reason")
        reason = raw.strip() if isinstance(raw, str) else ""
        what = request.match_info.get("what")
        actor = request[SESSION].principal.name
        try:
            if not reason:
                raise ValueError("Give a reason: it is written to the audit log.")
            if what == "replay":
                await dlq.replay(partition, offset, actor=actor, reason=reason,
                                 again=form.get("again") == "1")  # fmt: skip
            else:
                await dlq.discard(partition, offset, actor=actor, reason=reason)
        except (ValueError, DeadLetterHandled) as exc:
            error, status = str(exc) if isinstance(exc, ValueError) else exc.message, 409
        except DeadLetterNotFound as exc:
            return _problem(request, 404, "Not found", exc.message)
        except SagaError as exc:
            error, status = f"Kafka: {exc.message}", 503
        else:
            raise web.HTTPSeeOther(f"{PREFIX}/dead-letters/{partition}:{offset}")
    try:
        record = await dlq.get(partition, offset)
    except DeadLetterNotFound as exc:
        return _problem(request, 404, "Not found", exc.message)
    except SagaError as exc:
        return _problem(request, 503, "Kafka cannot be read", exc.message)
    saga_exists = bool(record.saga_id and await console.store.get_saga(record.saga_id))
    return render(
        request,
        "dead_letter.html",
        status=status,
        r=record,
        error=error,
        saga_exists=saga_exists,
        payload=record.payload,
    )


# -- definitions ------------------------------------------------------------------------------


@_page()
async def definitions(request: web.Request) -> web.StreamResponse:
    """Every definition name and version, its hash, and how many sagas run on it."""
    console = request.app[CONSOLE]
    usage = await data.sagas_per_version(console.store)
    items = []
    for name, version in sorted(await console.store.list_definitions()):
        d = await console.definitions.get(name, version)
        counts = usage.get((name, version), {})
        items.append(
            {
                "name": name,
                "version": version,
                "hash": d.content_hash if d else "",
                "steps": len(d.steps) if d else 0,
                "counts": data.status_totals(counts),
                "total": sum(counts.values()),
                "active": sum(counts.get(s, 0) for s in ("running", "compensating", "stuck")),
            }
        )
    return render(request, "definitions.html", items=items, statuses=data.STATUSES)


@_page()
async def definition(request: web.Request) -> web.StreamResponse:
    """One definition: its graph, its body and its Mermaid source."""
    console = request.app[CONSOLE]
    name = request.match_info["name"]
    raw = request.match_info["version"]
    if not raw.isdigit():
        return _problem(request, 404, "Not found", f"no version {raw!r}")
    try:
        d = await console.ops.get_definition(name, int(raw))
    except SagaError as exc:
        return _problem(request, 404, "Not found", exc.message)
    found = await console.definitions.get(name, int(raw))
    assert found is not None
    usage = (await data.sagas_per_version(console.store)).get((name, int(raw)), {})
    return render(
        request,
        "definition.html",
        d=d,
        graph=graph_svg(found),
        counts=data.status_totals(usage),
        steps=found.steps,
    )


# -- overview ---------------------------------------------------------------------------------

WINDOWS = {
    "1h": (timedelta(hours=1), 12),
    "24h": (timedelta(days=1), 24),
    "7d": (timedelta(days=7), 28),
}


@_page()
async def overview(request: web.Request) -> web.StreamResponse:
    """Throughput over time, step latency per participant, outbox backlog, consumer lag."""
    console = request.app[CONSOLE]
    window_key = request.query.get("window", "24h")
    window, buckets = WINDOWS.get(window_key, WINDOWS["24h"])
    now = datetime.now(UTC)
    series = await data.throughput(console.store, now, window=window, buckets=buckets)
    latencies = await data.step_latencies(console.store, console.definitions, since=now - window)
    backlog = await data.outbox_backlog(console.store)
    lag = await data.consumer_lag(console.store, console.bootstrap)
    attention_items = await data.needs_attention(console.store, console.definitions, limit=1000)
    reported = await breaker_reports(console.store)
    return render(
        request,
        "overview.html",
        breakers=[b for b in reported if b.current(now)],
        stale_breakers=sum(1 for b in reported if not b.current(now)),
        series=series,
        chart=chart_svg(series.starts, series.values, series.peak),
        window_key=window_key if window_key in WINDOWS else "24h",
        windows=list(WINDOWS),
        latencies=latencies,
        backlog=backlog,
        lag=lag,
        stuck=sum(1 for a in attention_items if a.why == "stuck"),
        paused=data.paused_participants(attention_items),
        ago=ago,
    )


# -- setup ------------------------------------------------------------------------------------


def setup_console(
    app: web.Application,
    ops: SagaOperations,
    config: ApiConfig,
    *,
    bootstrap: str | None = None,
) -> None:
    """Serve the operator console under ``/ui/`` on ``app`` (the API's application).

    Args:
        app: The API application.
        ops: The operations the API uses.
        config: The API's tokens and roles (the console signs in with the same tokens).
        bootstrap: Kafka bootstrap servers, for the dead letters and consumer lag.
    """
    app[CONSOLE] = Console(
        ops=ops, sessions=Sessions(config), templates=templates(), bootstrap=bootstrap
    )
    r = app.router
    r.add_get(PREFIX, home)
    r.add_get(f"{PREFIX}/", home)
    r.add_get(f"{PREFIX}/sign-in", sign_in_form)
    r.add_post(f"{PREFIX}/sign-in", sign_in)
    r.add_post(f"{PREFIX}/sign-out", sign_out)
    r.add_get(f"{PREFIX}/sagas", sagas)
    r.add_get(f"{PREFIX}/sagas/{{saga_id}}", saga)
    r.add_get(f"{PREFIX}/sagas/{{saga_id}}/actions/{{action}}", action)
    r.add_post(f"{PREFIX}/sagas/{{saga_id}}/actions/{{action}}", action)
    r.add_get(f"{PREFIX}/attention", attention)
    r.add_get(f"{PREFIX}/dead-letters", dead_letters)
    r.add_get(f"{PREFIX}/dead-letters/{{ref}}", dead_letter)
    r.add_post(f"{PREFIX}/dead-letters/{{ref}}/{{what:replay|discard}}", dead_letter)
    r.add_get(f"{PREFIX}/definitions", definitions)
    r.add_get(f"{PREFIX}/definitions/{{name}}/{{version}}", definition)
    r.add_get(f"{PREFIX}/overview", overview)
    r.add_static(f"{PREFIX}/static/", HERE / "static", append_version=False)


__all__ = ["CONSOLE", "Console", "setup_console"]
