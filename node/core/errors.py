"""One error hierarchy for the whole node.

Every error carries an HTTP status and a stable machine code; the web layer
renders them in one place (HTML for pages, ``{"error", "code"}`` for the API)
and the CLI prints ``message`` on one line. Messages say what to do next.
"""

from __future__ import annotations


class PasarError(Exception):
    status = 500
    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_json(self) -> dict[str, object]:
        return {"error": self.message, "code": self.code}


class BadRequest(PasarError):
    status = 400
    code = "bad_request"


class ValidationError(BadRequest):
    """Input that failed validation; ``fields`` maps field name -> problem."""

    status = 422
    code = "invalid"

    def __init__(self, fields: dict[str, str], message: str | None = None) -> None:
        self.fields = dict(fields)
        # The line a CLI prints above the problems, one per line.
        self.headline = message or f"invalid input: {len(self.fields)} problem(s)"
        summary = "; ".join(f"{k}: {v}" for k, v in sorted(self.fields.items()))
        super().__init__(message or f"invalid input ({summary})")

    def to_json(self) -> dict[str, object]:
        return {**super().to_json(), "fields": self.fields, "summary": self.headline}


class SignatureError(BadRequest):
    code = "bad_signature"


class Unauthorized(PasarError):
    status = 401
    code = "unauthorized"


class Forbidden(PasarError):
    status = 403
    code = "forbidden"


class NotFound(PasarError):
    status = 404
    code = "not_found"


class Conflict(PasarError):
    status = 409
    code = "conflict"


class Misdirected(PasarError):
    """A request naming a host this listener does not serve (DNS rebinding, typos)."""

    status = 421
    code = "wrong_host"


class PayloadTooLarge(PasarError):
    status = 413
    code = "too_large"


class ConfigError(PasarError):
    """Bad settings; raised at start, printed as one line by the CLI."""

    code = "config"


class StorageError(PasarError):
    status = 503
    code = "storage"


class NodeBusy(PasarError):
    """Another process holds the data directory."""

    status = 409
    code = "busy"


class TorError(PasarError):
    """Tor is missing, unreachable or refused a request; the message names the fix."""

    status = 503
    code = "tor"


class Unreachable(PasarError):
    """Another node's onion did not answer within the attempts and time allowed."""

    status = 502
    code = "unreachable"


class UnsupportedMediaType(PasarError):
    """A body in a type or charset the endpoint does not read."""

    status = 415
    code = "unsupported_media_type"


class Unavailable(PasarError):
    """What was asked needs a part of the node that is not running (tor, the node itself)."""

    status = 503
    code = "unavailable"


class WalletError(Unavailable):
    """Bitcoin Core is unreachable, refused our credentials, or answered an RPC with an error.

    The message names the RPC and the fix; the storefront stays up and payments pause.
    """

    code = "wallet"


class PsbtRefused(BadRequest):
    """A PSBT failed the checks made before any wallet signs it (wrong inputs, outputs, fee or sighash)."""

    status = 422
    code = "psbt_refused"
