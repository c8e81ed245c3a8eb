"""Reading request bodies: every way a body can be malformed is a 4xx with a message.

aiohttp's own readers raise ``LookupError`` for an unknown charset,
``ValueError`` for multipart without a boundary, ``UnicodeDecodeError`` for
fields that are not UTF-8 and ``RecursionError`` for deeply nested JSON; left
alone each would be a 500. Handlers read bodies only through here (or after
``parse_forms`` has read the form once; aiohttp caches it).
"""

from __future__ import annotations

import codecs
import json
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDictProxy

from ..core.errors import BadRequest, UnsupportedMediaType
from .middlewares import Handler

FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_JSON_DEPTH = 32


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


def _check_charset(request: web.Request, *, only_utf8: bool) -> None:
    charset = request.charset
    if charset is None:
        return
    try:
        name = codecs.lookup(charset).name
    except LookupError:
        raise UnsupportedMediaType(f"unknown charset {charset[:40]!r}: send UTF-8") from None
    if only_utf8 and name != "utf-8":
        raise UnsupportedMediaType(f"JSON must be UTF-8, not {charset[:40]!r}")


def _depth(value: Any) -> int:
    """How deeply lists and objects nest, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in item if isinstance(child, (list, dict)))
    return deepest


async def read_json(request: web.Request) -> Any:
    """The JSON body (``Content-Type: application/json``, UTF-8, at most 32 levels deep).

    Other content types (``text/plain`` included) are refused: a web page can
    send ``text/plain`` across sites without asking, never ``application/json``.
    """
    if not _is_json(request.content_type):
        raise UnsupportedMediaType(
            f"send the body as JSON with 'Content-Type: application/json' (got {request.content_type[:60]!r})"
        )
    _check_charset(request, only_utf8=True)
    raw = await request.read()
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadRequest(f"request body is not UTF-8 (byte {exc.start})") from None
    except RecursionError:
        raise BadRequest(f"JSON nested more than {MAX_JSON_DEPTH} levels deep") from None
    except ValueError as exc:
        raise BadRequest(f"request body must be JSON ({exc})") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise BadRequest(f"JSON nested more than {MAX_JSON_DEPTH} levels deep")
    return value


async def read_form(request: web.Request) -> MultiDictProxy[Any]:
    """The submitted form (url-encoded or multipart); other bodies read as an empty form."""
    if request.content_type in FORM_TYPES:
        _check_charset(request, only_utf8=False)
    try:
        return await request.post()
    except UnicodeDecodeError:
        raise BadRequest("form fields must be UTF-8 text") from None
    except LookupError as exc:
        raise UnsupportedMediaType(f"unknown charset in the form ({exc}): send UTF-8") from None
    # No boundary, bad part headers; RuntimeError: an unknown Content-Transfer-Encoding in a part.
    except (ValueError, RuntimeError, HttpProcessingError) as exc:
        if request.content_type.startswith("multipart/"):
            raise BadRequest(f"malformed multipart body ({exc})") from None
        raise BadRequest(f"malformed form body ({exc})") from None


@web.middleware
async def parse_forms(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Read a submitted form once, safely, before any handler calls ``request.post()``."""
    if request.method in UNSAFE and request.content_type in FORM_TYPES:
        await read_form(request)
    return await handler(request)
