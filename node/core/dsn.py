"""The ``directory_dsn`` setting's check: libpq's connection-string syntax, without libpq (core imports no driver).

The messages never quote the string: it may hold a password.
"""

from __future__ import annotations

LIBPQ_KEYWORDS = frozenset(
    (
        "host hostaddr port dbname user password passfile channel_binding connect_timeout client_encoding "
        "options application_name fallback_application_name keepalives keepalives_idle keepalives_interval "
        "keepalives_count tcp_user_timeout replication gssencmode sslmode requiressl sslcompression sslcert "
        "sslkey sslpassword sslcertmode sslrootcert sslcrl sslcrldir sslsni requirepeer "
        "ssl_min_protocol_version ssl_max_protocol_version krbsrvname gsslib gssdelegation service "
        "target_session_attrs load_balance_hosts require_auth"
    ).split()
)  # libpq's connection keywords (PostgreSQL 16 docs, "Parameter Key Words")


def check_dsn(value: str) -> str | None:
    """libpq's connection string syntax (a URI, or ``key=value`` pairs, values quoted with '...' and \\
    escapes), parsed here without libpq; the message never quotes the string (it may hold a password)."""
    bad = (
        "must be empty or a PostgreSQL connection string: key=value pairs such as "
        "'host=/run/postgresql dbname=pasar' (quote a value holding spaces: password='a b') "
        "or a postgresql://user@host/dbname URI"
    )
    if value == "" or value.startswith(("postgresql://", "postgres://")):
        return None
    i, n, pairs = 0, len(value), 0
    while True:
        while i < n and value[i].isspace():
            i += 1
        if i == n:
            return None if pairs else bad
        start = i
        while i < n and (value[i].isalnum() or value[i] == "_"):
            i += 1
        key_end = i
        while i < n and value[i].isspace():
            i += 1
        if key_end == start or i == n or value[i] != "=":
            return bad
        i += 1
        while i < n and value[i].isspace():
            i += 1
        quoted = i < n and value[i] == "'"
        i += quoted
        while i < n and (value[i] != "'" if quoted else not value[i].isspace()):
            i += 2 if value[i] == "\\" else 1
        if quoted and i >= n:
            return bad
        i = min(n, i + quoted)
        if value[start:key_end] not in LIBPQ_KEYWORDS:  # a key is not a secret: name it
            return f"names {value[start:key_end]!r}, which is not a PostgreSQL connection keyword"
        pairs += 1
