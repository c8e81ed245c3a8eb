"""``GET /metrics`` on the admin listener (Prometheus text format) and the request figures of every listener.

The admin app holds one ``Metrics`` (``METRICS``): its own ``CollectorRegistry`` (not the process-wide one:
tests run many nodes in one process), the request counter and latency histogram filled here, and
``refresh``, which reads the node's state (``node/app/metrics.py``) just before a scrape. The error middleware
of every listener (admin, storefronts, node onion, public directory) calls ``observe`` once per request, with
the status the client gets. A route is named by its route name (or its path pattern), never by the path
itself: a storefront path may hold a buyer's secret (``/order/<token>``), and the label set stays bounded.

The scrape needs the scrape-only token (``Authorization: Bearer <data-dir>/metrics.token``), not the admin
API token: ``metrics.token`` opens ``GET /metrics`` and nothing else, and the admin token does not open
``/metrics`` (docs/metrics.md: how the Prometheus user gets a copy).

A request is counted when its response is prepared (``sent``, from the listeners' ``on_response_prepare``
hooks in ``middlewares.py``), with the status the client gets: a ``web.FileResponse`` (images) decides
200, 206, 304 or 416 only then, after the handler returned.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from . import appkeys
from .checkout import ADMIN_APP
from .directory_state import DIRWEB

PATH = "/metrics"
# Seconds: a page from the cache takes about a millisecond, a search or a checkout tens; a slow disk or Core more.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Any other method a client sends is counted as "other" (a label per made-up method would grow without end).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetrics:
    """Requests by listener, route, method and status; their latency by listener and route."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "pasar_http_requests",
            "HTTP requests answered, by listener (admin, store, node, directory), route, method and status",
            ("listener", "route", "method", "status"),
            registry=registry,
        )
        self.latency = Histogram(
            "pasar_http_request_duration_seconds",
            "Time to answer an HTTP request (until its response starts), by listener and route",
            ("listener", "route"),
            buckets=BUCKETS,
            registry=registry,
        )
        # Each label set's children, looked up once: ``labels()`` costs about as much as the counting.
        self._children: dict[tuple[str, str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, listener: str, route: str, method: str, status: int, seconds: float) -> None:
        key = (listener, route, method if method in METHODS else "other", status)
        children = self._children.get(key)
        if children is None:
            counter = self.requests.labels(listener, route, key[2], str(status))
            children = self._children[key] = (counter, self.latency.labels(listener, route))
        children[0].inc()
        children[1].observe(seconds)


@dataclass(frozen=True)
class Metrics:
    """The admin app's metrics: the registry a scrape renders, the request figures, and the state refresh."""

    registry: CollectorRegistry
    requests: RequestMetrics
    refresh: Callable[[], Awaitable[None]]
    token: str = ""  # the scrape-only bearer token (``metrics.token``); empty: every scrape is refused


METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
# When the error middleware received the request (``time.perf_counter``); popped when the request is counted.
STARTED: web.RequestKey[float] = web.RequestKey("metrics_started", float)


def received(request: web.Request) -> None:
    """The error middleware got the request: ``sent`` counts it once its response is prepared."""
    request[STARTED] = time.perf_counter()


def sent(request: web.Request, response: web.StreamResponse) -> None:
    """Count the request whose response is being prepared, with its final status (once per request)."""
    started = request.get(STARTED)
    if started is not None:
        del request[STARTED]
        observe(request, response.status, started)


def _admin_and_listener(app: web.Application) -> tuple[web.Application, str] | None:
    """The admin app whose metrics count a request to ``app``, and which listener ``app`` is."""
    if METRICS in app:
        return app, "admin"
    if appkeys.STORE in app and ADMIN_APP in app:
        return app[ADMIN_APP], "store"
    if DIRWEB in app:
        admin = app[DIRWEB].admin_app
        runners = admin.get(appkeys.DISCOVERY_RUNNERS, {})
        name = next((n for n, runner in runners.items() if runner.app is app), "node")
        return admin, name
    return None


def route_name(request: web.Request) -> str:
    """The route's name, else its path pattern (``/api/v1/stores/{onion}``), else ``(none)`` (no route)."""
    info = request.match_info
    route = info.route if info is not None else None
    if route is None or route.resource is None:
        return "(none)"
    return route.name or route.resource.canonical


def observe(request: web.Request, status: int, started: float) -> None:
    """Count one answered request (a no-op on an app no node's metrics cover, e.g. a bare test app)."""
    found = _admin_and_listener(request.app)
    if found is None:
        return
    admin, listener = found
    metrics = admin.get(METRICS)
    if metrics is not None:
        metrics.requests.observe(listener, route_name(request), request.method, status, time.perf_counter() - started)


async def scrape(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    await metrics.refresh()
    body = generate_latest(metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})


def add_routes(app: web.Application, metrics: Metrics) -> None:
    """``GET /metrics`` on the admin app (only there: no storefront or onion serves it), opened by
    ``metrics.token`` (the admin guard checks it)."""
    app[METRICS] = metrics
    if appkeys.AUTH in app:
        app[appkeys.AUTH].metrics_token = metrics.token
    app.router.add_get(PATH, scrape, name="metrics")
