"""What the directory pages share: where discovery lives, the public report form's token and rate limit.

The directory pages run on two apps: the admin app (the node owner's own
directory, behind the admin login) and the public directory onion's app.
Both find discovery's parts (``GOSSIP``, ``DIRECTORY``, ``CRAWLER``) on the
admin app; while discovery is off (or not started yet) they answer 503.

Tor Browser in its safest mode sends ``Origin: null`` and no ``Sec-Fetch-*``
on a same-origin form POST from a ``no-referrer`` page, so the public report
form cannot be told apart from a cross-site post by its headers. It carries a
form token instead: an HMAC, under a secret made at start, over the time the
form was shown and the listing it reports (valid one hour), and each listing
takes only a few reports an hour.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from ..core.errors import PasarError, Unavailable
from . import appkeys
from .formtokens import FormTokens

if TYPE_CHECKING:
    from ..discovery.crawler import Crawler
    from ..discovery.directory import Directory

REPORTS_PER_LISTING = 5  # per REPORT_WINDOW
REPORTS_PER_WINDOW = 200  # all listings together
REPORT_WINDOW = 3600
MAX_TRACKED = 4096  # listings whose recent reports are remembered
ONION = re.compile(r"[a-z2-7]{56}")
IMAGE_ID = re.compile(r"[0-9a-f]{64}")


class TooManyReports(PasarError):
    status = 429
    code = "too_many_requests"


@dataclass
class ReportLimiter:
    """At most ``per_listing`` reports per listing and ``total`` overall in a sliding window (bounded memory)."""

    per_listing: int = REPORTS_PER_LISTING
    total: int = REPORTS_PER_WINDOW
    window: int = REPORT_WINDOW
    clock: Callable[[], float] = time.time
    _recent: OrderedDict[str, deque[float]] = field(default_factory=OrderedDict)
    _all: deque[float] = field(default_factory=deque)

    def take(self, store: str, listing: str) -> None:
        now = self.clock()
        while self._all and self._all[0] <= now - self.window:
            self._all.popleft()
        key = f"{store}/{listing}"
        times = self._recent.pop(key, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        self._recent[key] = times
        while len(self._recent) > MAX_TRACKED:
            self._recent.popitem(last=False)
        if len(times) >= self.per_listing or len(self._all) >= self.total:
            raise TooManyReports("this listing was reported several times in the last hour; thank you, try later")
        times.append(now)
        self._all.append(now)


@dataclass
class DirectoryWeb:
    """Per app: the admin app holding discovery, whether this is the admin's own directory, report guards."""

    admin_app: web.Application
    admin: bool
    tokens: FormTokens = field(default_factory=FormTokens)
    limiter: ReportLimiter = field(default_factory=ReportLimiter)


DIRWEB: web.AppKey[DirectoryWeb] = web.AppKey("directory_web")


def state(request: web.Request) -> DirectoryWeb:
    return request.app[DIRWEB]


def directory(request: web.Request) -> Directory:
    found = state(request).admin_app.get(appkeys.DIRECTORY)
    if found is None:
        raise Unavailable("the directory is off on this node (discovery is disabled or still starting)")
    return found


def crawler(request: web.Request) -> Crawler | None:
    return state(request).admin_app.get(appkeys.CRAWLER)
