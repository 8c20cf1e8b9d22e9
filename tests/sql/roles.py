"""Acting as a member of a database role, for the tests of the roles' grants."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy.exc import ProgrammingError


@contextlib.contextmanager
def as_member_of(engine: sa.Engine, group: str) -> Iterator[sa.Connection]:
    """A connection acting as a fresh login role that is only a member of ``group``; dropped after."""
    login = f"cft_{group}_{secrets.token_hex(3)}"
    with engine.connect() as admin:
        admin.execute(sa.text(f'CREATE ROLE "{login}" LOGIN IN ROLE {group}'))
        admin.commit()
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'SET ROLE "{login}"'))
            yield conn
            conn.rollback()
    finally:
        with engine.connect() as admin:
            admin.execute(sa.text(f'DROP OWNED BY "{login}"'))
            admin.execute(sa.text(f'DROP ROLE "{login}"'))
            admin.commit()


def denied(conn: sa.Connection, sql: str) -> bool:
    """True if the statement fails for want of a privilege (rolled back either way)."""
    savepoint = conn.begin_nested()
    try:
        conn.execute(sa.text(sql))
    except ProgrammingError as exc:
        savepoint.rollback()
        return "permission denied" in str(exc) or "must be owner" in str(exc)
    savepoint.rollback()
    return False
