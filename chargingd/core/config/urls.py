"""What the loader checks in database URLs before any connection is tried."""

from __future__ import annotations


def postgres_ports(url: str) -> list[str]:
    """The ports a libpq URL names, one per host ("" where a host names none), read
    by libpq itself (psycopg's conninfo_to_dict is PQconninfoParse): the user info
    ends at the last "@" of the authority, so a password with "?" or "#" is no host
    or query, and "?port=" and "[::1]:5432" are read as at connect. A URL libpq
    cannot parse names no port here: connect reports it (as before this check)."""
    if "://" not in url:
        return []
    from psycopg import Error
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(url)
    except Error:
        return []
    port = params.get("port")
    return [p.strip() for p in str(port).split(",")] if port is not None else []
