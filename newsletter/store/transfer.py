"""Moving a state database to another one (`newsletter migrate-db`: a SQLite state folder to PostgreSQL).

Both ends are opened by this version, so both have every migration; every table of schema.py is then
copied row for row, parents before children, in one transaction on the target: a failure leaves the
target as empty as it was. Auto-increment counters (PostgreSQL sequences) continue after the copied
ids. The delivery log moves as it is, so nothing that was sent, or may have been, is sent again.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from newsletter.errors import StoreError
from newsletter.store.schema import installation, metadata, schema_migrations

BATCH = 1000  # rows per INSERT


def copied_tables() -> list[sa.Table]:
    """Every table but the migrations record (the target has its own), parents first."""
    return [table for table in metadata.sorted_tables if table is not schema_migrations]


def copy_rows(source: Connection, target: Connection) -> dict[str, int]:
    """Copy every table from ``source`` into the empty ``target``; rows copied per table.

    The target's installation value (made when it was created) gives way to the source's, so the moved
    state keeps its digest ids and Message-IDs.
    """
    target.execute(installation.delete())
    _refuse_non_empty(target)
    counts = {}
    for table in copied_tables():
        counts[table.name] = 0
        for rows in _batches(source, table):
            target.execute(table.insert(), rows)
            counts[table.name] += len(rows)
        _continue_sequence(target, table)
    return counts


def _refuse_non_empty(target: Connection) -> None:
    for table in copied_tables():
        if target.execute(sa.select(sa.literal(1)).select_from(table).limit(1)).first() is not None:
            raise StoreError(
                f"the target database already has rows in {table.name!r}: refusing to mix two states",
                hint="migrate into a new, empty database",
            )


def _batches(conn: Connection, table: sa.Table) -> Iterator[list[dict[str, Any]]]:
    order = list(table.primary_key.columns) or list(table.columns)
    result = conn.execute(sa.select(table).order_by(*order))
    while rows := result.fetchmany(BATCH):
        yield [dict(row._mapping) for row in rows]


def _continue_sequence(conn: Connection, table: sa.Table) -> None:
    """On PostgreSQL, the next generated id of ``table`` comes after the copied ones."""
    if conn.dialect.name != "postgresql":
        return
    for column in table.primary_key.columns:
        if column.autoincrement is True or (column.autoincrement == "auto" and _serial(table, column)):
            sequence = sa.func.pg_get_serial_sequence(table.name, column.name)
            highest = sa.select(sa.func.coalesce(sa.func.max(column), 0)).scalar_subquery()
            conn.execute(sa.select(sa.func.setval(sequence, highest + 1, False)))


def _serial(table: sa.Table, column: sa.Column[Any]) -> bool:
    return len(table.primary_key.columns) == 1 and isinstance(column.type, sa.Integer)
