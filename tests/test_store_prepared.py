"""store.engine.Prepared: Core statements compiled once and run on the DBAPI cursor."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy import exc

from newsletter.store.engine import Prepared

metadata = sa.MetaData()
pairs = sa.Table(
    "pairs",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("size", sa.Integer, nullable=False),
)
INSERT = pairs.insert().values({"name": sa.bindparam("name"), "size": sa.bindparam("size")})


@pytest.fixture
def conn() -> Iterator[sa.Connection]:
    engine = sa.create_engine("sqlite://")
    metadata.create_all(engine)
    with engine.connect() as connection:
        yield connection


def stored(conn: sa.Connection) -> dict[str, int]:
    return {row.name: row.size for row in conn.execute(sa.select(pairs))}


@pytest.mark.parametrize("names", [("name", "size"), ("size", "name")])
def test_rows_are_bound_by_the_names_given_whatever_the_compiled_order(
    conn: sa.Connection, names: tuple[str, ...]
) -> None:
    values = {"a": 1, "b": 2}
    rows = [tuple({"name": k, "size": v}[n] for n in names) for k, v in values.items()]
    assert Prepared(INSERT, conn.dialect).run_rows(conn, names, rows) == 2
    assert stored(conn) == values


def test_run_binds_by_name_and_counts_matched_rows(conn: sa.Connection) -> None:
    Prepared(INSERT, conn.dialect).run_rows(conn, ("name", "size"), [("a", 1), ("b", 2)])
    grow = pairs.update().where(pairs.c.name == sa.bindparam("b_name")).values(size=sa.bindparam("b_size"))
    assert Prepared(grow, conn.dialect).run(conn, {"b_name": "b", "b_size": 5}) == 1
    assert Prepared(grow, conn.dialect).run(conn, {"b_name": "zz", "b_size": 5}) == 0
    assert stored(conn) == {"a": 1, "b": 5}


def test_a_driver_error_is_wrapped_as_sqlalchemy_would(conn: sa.Connection) -> None:
    prepared = Prepared(INSERT, conn.dialect)
    with pytest.raises(exc.IntegrityError, match=r"UNIQUE constraint failed: pairs\.name"):
        prepared.run_rows(conn, ("name", "size"), [("a", 1), ("a", 2)])
