"""Which driver errors mean "the database failed this request": shared by the synchronous
(``serve/db.py``) and asyncio (``serve/db_async.py``) database code, so neither imports the other
for it, and by the HTTP layer (a JSON 503)."""

from __future__ import annotations

__all__ = ["database_errors", "lost_connection"]


def lost_connection(exc: BaseException) -> bool:
    """A DB-API error that means the connection is gone (any driver: by the standard's names)."""
    return any(c.__name__ in ("OperationalError", "InterfaceError") for c in type(exc).__mro__)


def database_errors() -> tuple[type[Exception], ...]:
    """The drivers' error classes (and SQLAlchemy's) that mean the database failed a request."""
    import sqlite3

    import sqlalchemy.exc

    errors: list[type[Exception]] = [sqlite3.Error, sqlalchemy.exc.SQLAlchemyError]
    try:
        import psycopg

        errors.append(psycopg.Error)  # psycopg_pool's PoolTimeout is one too
    except ImportError:  # pragma: no cover - the serve extra installs it
        pass
    return tuple(errors)
