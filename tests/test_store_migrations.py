"""Opening the store: migrations, SQLite settings, schema in step with schema.py, errors."""

from __future__ import annotations

import html
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from newsletter.errors import StoreError
from newsletter.models import Paper, abstract_key, normalize_title
from newsletter.store import MIGRATIONS, Store
from newsletter.store.engine import db_errors, make_engine, transaction
from newsletter.store.lock import run_lock
from newsletter.store.migrations import migrate
from newsletter.store.schema import metadata
from tests.test_store_helpers import db_url, make_dump, paper


def _migration_rows(store: Store) -> list[tuple[str, datetime]]:
    with store._engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT name, applied_at FROM schema_migrations ORDER BY name"))
        return [(name, applied_at) for name, applied_at in rows]


def test_open_applies_and_records_migrations_once(store_url: str) -> None:
    with Store(store_url) as first:
        assert first.migrations_applied == [name for name, _ in MIGRATIONS]
        recorded = _migration_rows(first)
    with Store(store_url) as again:
        assert again.migrations_applied == []
        assert _migration_rows(again) == recorded
    assert [name for name, _ in recorded] == [name for name, _ in MIGRATIONS]


def test_open_creates_the_state_folder(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a' / 'b' / 'state.db'}"
    with Store(url):
        assert (tmp_path / "a" / "b" / "state.db").is_file()


def test_a_newer_schema_is_refused(store_url: str) -> None:
    with Store(store_url) as store, store._engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO schema_migrations VALUES ('0999_from_the_future', '2030-01-01')"))

    with pytest.raises(StoreError, match="0999_from_the_future") as caught:
        Store(store_url)
    assert caught.value.hint is not None and "upgrade" in caught.value.hint
    setting = "NEWSLETTER_DATABASE_URL" if store_url.startswith("postgresql") else "NEWSLETTER_HOME"
    assert setting in caught.value.hint  # NEWSLETTER_HOME does not choose a PostgreSQL database


def test_a_schema_is_not_brought_up_to_date_while_another_process_runs_on_it(tmp_path: Path) -> None:
    """A daemon of the version before, still running, went on writing beneath the new schema (papers
    it stored then had no abstract key: a retitled listing of one was sent again as new)."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    engine = make_engine(sa.make_url(url))
    migrate(engine, MIGRATIONS[:-1])
    engine.dispose()
    with run_lock(tmp_path), pytest.raises(StoreError, match="brought up to date") as refused:
        Store(url, home=tmp_path)
    assert "stop the daemon" in (refused.value.hint or "")
    with Store(url, home=tmp_path) as store:  # the lock free: brought up to date
        assert store.migrations_applied == [MIGRATIONS[-1][0]]
    with run_lock(tmp_path), Store(url, home=tmp_path) as store:  # up to date: opened beside a run
        assert store.migrations_applied == []


def test_a_dump_stored_by_a_process_of_an_earlier_version_still_open_is_refused(store_url: str) -> None:
    """An earlier version's serve, open before the upgrade and holding no run lock, ingested a new dump
    file on a page load beneath the new schema: its papers had no details nor abstract key, and the
    dump was never read again."""
    old_insert = sa.text(  # as the code before 0018 writes a dump
        "INSERT INTO dumps (content_hash, source, format, ingested_at, papers, new)"
        " VALUES ('h', 'test', 'hf-json', '2026-01-01 00:00:00', 0, 0)"
    )
    with Store(store_url) as store:
        refused = pytest.raises(sa.exc.DBAPIError, match="brought up to date by a newer version")
        with refused, store._engine.begin() as conn:
            conn.execute(old_insert)
        assert (
            store.ingest(make_dump(paper("Kept")), datetime(2026, 1, 2, tzinfo=UTC)).new == 1
        )  # this version's ingest goes on


def test_a_newer_schema_is_refused_as_newer_while_a_daemon_of_that_version_runs(tmp_path: Path) -> None:
    """A newer version's daemon holds the state folder: this older one is refused for its age, not asked
    to stop that daemon to bring the database "up to date" (only to be refused for its age after)."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    with Store(url) as store, store._engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO schema_migrations VALUES ('0999_from_the_future', '2030-01-01')"))
    with run_lock(tmp_path), pytest.raises(StoreError, match="newer than this version knows"):
        Store(url, home=tmp_path)


def test_a_failing_migration_leaves_no_trace(store_url: str) -> None:
    engine = make_engine(sa.make_url(store_url))

    def broken(conn: Connection) -> None:
        conn.execute(sa.text("CREATE TABLE half_done (x INTEGER)"))
        raise RuntimeError("migration bug")

    with pytest.raises(RuntimeError, match="migration bug"):
        migrate(engine, (*MIGRATIONS, ("0999_broken", broken)))

    with transaction(engine, write=False) as conn:
        tables = set(sa.inspect(conn).get_table_names())
        names = list(conn.execute(sa.text("SELECT name FROM schema_migrations")).scalars())
    assert "half_done" not in tables and "papers" in tables
    assert names == [name for name, _ in MIGRATIONS]
    engine.dispose()


def test_refused_files_recorded_before_0007_survive_it_and_a_second_name_can_join(store_url: str) -> None:
    engine = make_engine(sa.make_url(store_url))
    before = tuple(m for m in MIGRATIONS if m[0] < "0007")
    migrate(engine, before)
    row = "('abc', 'dumps/one.json', 'item 1: bad', '2026-01-01 00:00:00.000000')"
    with transaction(engine, write=True) as conn:
        conn.execute(
            sa.text(f"INSERT INTO rejected_files (content_hash, path, problem, first_seen) VALUES {row}")
        )
    engine.dispose()
    with Store(store_url) as store:
        assert store.migrations_applied == [name for name, _ in MIGRATIONS if name >= "0007"]
        store.remember_rejected("abc", "dumps/two.json", "item 1: bad", datetime(2026, 1, 2, tzinfo=UTC))
        store.remember_rejected("abc", "dumps/two.json", "again", datetime(2026, 1, 3, tzinfo=UTC))
        assert sorted((r.path, r.problem) for r in store.rejected_files()) == [
            ("dumps/one.json", "item 1: bad"),
            ("dumps/two.json", "item 1: bad"),
        ]
        assert store.rejected_keys() == {("abc", "dumps/one.json"), ("abc", "dumps/two.json")}


def _store_before(store_url: str, migration: str, title: str, abstract: str) -> None:
    """A state with every migration before ``migration`` and one paper keyed by its title, as stored then."""
    _papers_before(store_url, migration, [(title, abstract)])


def _papers_before(store_url: str, migration: str, papers: list[tuple[str, str]]) -> None:
    """A state with every migration before ``migration`` and these (title, abstract) papers, each keyed
    by its title, as stored then."""
    engine = make_engine(sa.make_url(store_url))
    migrate(engine, tuple(m for m in MIGRATIONS if m[0] < migration))
    with transaction(engine, write=True) as conn:
        conn.execute(
            sa.text(
                "INSERT INTO dumps (content_hash, source, format, ingested_at, papers, new)"
                " VALUES ('h', 'test', 'hf-text', '2026-01-01 00:00:00.000000', 1, 1)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO papers (key, title_key, title, abstract, authors, first_seen, last_seen,"
                " first_dump_seq, times_seen, best_rank) VALUES (:key, :key, :title, :abstract, '[]',"
                " '2026-01-01 00:00:00.000000', '2026-01-01 00:00:00.000000', 1, 1, 1)"
            ),
            [
                {"key": normalize_title(title), "title": title, "abstract": abstract}
                for title, abstract in papers
            ],
        )
    engine.dispose()


def test_papers_stored_before_0009_are_found_by_their_abstract_after_it(store_url: str) -> None:
    abstract = " ".join(f"word{i}" for i in range(60))
    _store_before(store_url, "0009", "Old Titel", abstract)
    with Store(store_url) as store:
        assert store.migrations_applied[0] == "0009_abstract_key"
        retitled = Paper(title="Old Title", abstract=abstract, rank=1)
        assert store.ingest(make_dump(retitled), datetime(2026, 1, 2, tzinfo=UTC)).new == 0


def test_abstract_keys_made_another_way_are_made_again_by_0015(store_url: str) -> None:
    """Versions that hashed an abstract's first 40 words left keys no later listing matched: a retitled
    paper was sent again as new."""
    abstract = " ".join(f"word{i}" for i in range(60))
    _store_before(store_url, "0015", "Old Titel", abstract)
    engine = make_engine(sa.make_url(store_url))
    with transaction(engine, write=True) as conn:
        conn.execute(sa.text("UPDATE papers SET abstract_key = 'hash-of-the-first-40-words'"))
    engine.dispose()
    with Store(store_url) as store:
        assert store.migrations_applied[0] == "0015_abstract_keys"
        retitled = Paper(title="Old Title", abstract=abstract, rank=1)
        assert store.ingest(make_dump(retitled), datetime(2026, 1, 2, tzinfo=UTC)).new == 0


def test_papers_stored_with_html_entities_are_decoded_by_0012(store_url: str) -> None:
    """Text dumps are read decoded since 0012; a paper stored as 'Q&amp;A Models' came back as new."""
    abstract = "We answer questions &amp; more when L &lt; 4096. " + " ".join(f"word{i}" for i in range(60))
    _store_before(store_url, "0012", "Q&amp;A Models", abstract)
    engine = make_engine(sa.make_url(store_url))
    with transaction(engine, write=True) as conn:  # vectors of the encoded text, and another paper's
        for key in ("q amp a models", "q amp a models#0", "q amp a modelsx"):
            conn.execute(
                sa.text("INSERT INTO vectors (model, key, dim, data) VALUES ('m', :key, 1, :data)"),
                {"key": key, "data": b"\0\0\0\0"},
            )
    engine.dispose()
    with Store(store_url) as store:
        (stored,) = store.papers_named(["Q&A Models"])
        assert (stored.key, stored.title) == ("q amp a models", "Q&A Models")  # the key sent links carry
        assert stored.abstract.startswith("We answer questions & more when L < 4096.")
        assert store.record_feedback(
            "ada@example.org", "q amp a models", "more", datetime(2026, 1, 2, tzinfo=UTC)
        )
        relisted = Paper(title="Q&A Models", abstract=html.unescape(abstract), rank=1)  # as read now
        assert store.ingest(make_dump(relisted), datetime(2026, 1, 2, tzinfo=UTC)).new == 0
        with store._engine.connect() as conn:
            kept = conn.execute(sa.text("SELECT key FROM vectors")).scalars().all()
    assert kept == ["q amp a modelsx"]


def test_arxiv_ids_stored_in_another_spelling_take_the_one_read_now_in_0014(store_url: str) -> None:
    """Ids are read case-blind since 0014: '2312.00752V2' stored before would not match the listing read
    as '2312.00752', and the paper was new again, sent a second time."""
    _store_before(store_url, "0014", "Mamba Paper", "About it.")
    engine = make_engine(sa.make_url(store_url))
    with transaction(engine, write=True) as conn:
        conn.execute(sa.text("UPDATE papers SET arxiv_id = '2312.00752V2'"))
    engine.dispose()
    with Store(store_url) as store:
        (stored,) = store.papers_named(["Mamba Paper"])
        assert (stored.key, stored.arxiv_id) == ("mamba paper", "2312.00752")  # the key links carry stays
        relisted = Paper(
            title="Mamba: Linear-Time Sequence Modeling", abstract="About it.", rank=1, arxiv_id="2312.00752"
        )
        assert store.ingest(make_dump(relisted), datetime(2026, 1, 2, tzinfo=UTC)).new == 0


def test_title_and_abstract_keys_are_made_again_without_format_characters_by_0016(store_url: str) -> None:
    """Keys are made without format characters since 0016: a title with a soft hyphen, stored with a key
    split at it, would not match its next listing (no abstract key to go by), and came back as new."""
    title, abstract = "Trans\u00adformers for All", " ".join(f"wo\u00adrd{i}" for i in range(45))
    _store_before(store_url, "0016", title, abstract)
    engine = make_engine(sa.make_url(store_url))
    with transaction(engine, write=True) as conn:  # the keys as made before 0016
        split = {"k": "trans formers for all", "a": "the old key of an abstract split at its soft hyphens"}
        conn.execute(sa.text("UPDATE papers SET key = :k, title_key = :k, abstract_key = :a"), split)
    engine.dispose()
    with Store(store_url) as store:
        assert store.migrations_applied[0] == "0016_format_characters"
        (stored,) = store.papers_named(["Transformers for All"])
        assert stored.key == "trans formers for all"  # the key sent links carry stays
        assert store.paper_by_key("trans formers for all") == stored
        relisted = Paper(title=title, abstract="Short.", rank=1)
        assert store.ingest(make_dump(relisted), datetime(2026, 1, 2, tzinfo=UTC)).new == 0
        retitled = Paper(title="Transformers for Everyone", abstract=abstract, rank=1)
        assert store.ingest(make_dump(retitled), datetime(2026, 1, 3, tzinfo=UTC)).new == 0


def test_old_arxiv_ids_stored_with_a_subject_class_lose_it_in_0017(store_url: str) -> None:
    """Old ids are read without their subject class since 0017: 'math.AG/0601001' stored before would not
    match the feed's 'math/0601001', and the paper was new again, sent a second time."""
    _store_before(store_url, "0017", "Old Varieties", "About it.")
    engine = make_engine(sa.make_url(store_url))
    with transaction(engine, write=True) as conn:
        conn.execute(sa.text("UPDATE papers SET key = 'math.AG/0601001', arxiv_id = 'math.AG/0601001'"))
    engine.dispose()
    with Store(store_url) as store:
        assert store.migrations_applied == ["0017_old_arxiv_ids", "0018_written_by"]
        (stored,) = store.papers_named(["Old Varieties"])
        assert (stored.key, stored.arxiv_id) == (
            "math.AG/0601001",
            "math/0601001",
        )  # the key links carry stays
        relisted = Paper(title="Old Varieties", abstract="About it.", rank=1, arxiv_id="math/0601001")
        assert store.ingest(make_dump(relisted), datetime(2026, 1, 2, tzinfo=UTC)).new == 0
        assert store.paper_by_key("math.AG/0601001") == store.find_paper("math.AG/0601001") is not None


def _sqlite_schema(conn: Connection) -> set[tuple[str, str, str]]:
    rows = conn.execute(sa.text("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL"))
    return {(kind, name, " ".join(sql.split())) for kind, name, sql in rows}


def test_migrations_build_exactly_the_schema_in_schema_py(tmp_path: Path) -> None:
    with Store(db_url(tmp_path)) as store, store._engine.connect() as conn:
        migrated = _sqlite_schema(conn)
    fresh = sa.create_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    metadata.create_all(fresh)
    with fresh.connect() as conn:
        declared = _sqlite_schema(conn)
    fresh.dispose()

    assert migrated == declared
    assert {name for kind, name, _ in migrated if kind == "table"} >= {"papers", "digests", "digest_items"}


def test_sqlite_runs_with_wal_foreign_keys_busy_timeout_and_full_sync(tmp_path: Path) -> None:
    """synchronous=FULL: a 'sending' committed before the send survives a power cut (NORMAL: 1 lost it)."""
    with Store(db_url(tmp_path)) as store, store._engine.connect() as conn:
        settings = {
            name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
        }
    assert settings == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 10_000, "synchronous": 2}


def test_datetimes_come_back_as_the_same_instant_in_utc(store_url: str) -> None:
    listed_at = datetime(2024, 3, 11, 9, 30, tzinfo=timezone(timedelta(hours=2)))
    with Store(store_url) as store:
        store.ingest(make_dump(paper("When")), listed_at)
        (stored,) = store.papers_first_seen_in(1)
    assert stored.first_seen == listed_at
    assert stored.first_seen.tzinfo is UTC and stored.first_seen.hour == 7


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("::not a url::", "invalid database URL"),
        ("postgresql+psycopg://nl:s3cret@db.example.org:5432x/nl", r"invalid database URL \(NEWSLETTER_"),
        ("nosuchdb://x/y", "no database driver"),
        ("postgresql+nosuchdriver://user:s3cret@localhost/db", "no database driver"),
    ],
)
def test_bad_urls_raise_store_errors_without_secrets(url: str, expected: str) -> None:
    with pytest.raises(StoreError, match=expected) as caught:
        Store(url)
    assert "s3cret" not in str(caught.value) and "\n" not in str(caught.value)


def test_a_bad_url_is_named_by_where_it_came_from() -> None:
    with pytest.raises(StoreError, match=r"invalid database URL \(migrate-db's TARGET\)"):
        Store("garbage", "migrate-db's TARGET")


def test_an_unopenable_database_is_a_one_line_store_error(tmp_path: Path) -> None:
    (tmp_path / "state.db").mkdir()  # a folder where the file should be
    with pytest.raises(StoreError, match="database error while opening") as caught:
        Store(f"sqlite:///{tmp_path / 'state.db'}")
    assert "\n" not in str(caught.value)
    assert caught.value.hint is not None


def test_store_closes_as_a_context_manager(tmp_path: Path) -> None:
    with Store(db_url(tmp_path)) as store:
        assert store.latest_dump_seq() is None
    assert repr(store).startswith("Store('sqlite:///")


def test_the_migrations_compile_for_postgresql() -> None:
    statements: list[str] = []
    dialect = postgresql.dialect()
    engine = sa.create_mock_engine(
        "postgresql://", lambda sql, *_, **__: statements.append(str(sql.compile(dialect=dialect)))
    )
    for _, step in MIGRATIONS:
        step(engine)  # type: ignore[arg-type]

    ddl = "\n".join(statements)
    assert ddl.count("CREATE TABLE") == len(metadata.tables) - 1  # schema_migrations is made by migrate()
    assert "TIMESTAMP WITH TIME ZONE" in ddl and "SERIAL" in ddl


@pytest.mark.parametrize(
    "said", ["database or disk is full", 'could not extend file "base/16384/2619": No space left on device']
)
def test_a_full_disk_says_what_to_do(said: str) -> None:
    """A migration (or any write) stopped by a full disk said only "database or disk is full"."""
    with pytest.raises(StoreError) as info, db_errors("applying migration 0015_abstract_keys"):
        raise sa.exc.OperationalError("UPDATE papers", {}, Exception(said))
    assert (
        info.value.hint
        == "free space on the state database's disk and run again (the write that failed was undone)"
    )


def test_a_disk_io_error_names_a_full_disk() -> None:
    """On a full disk SQLite cannot grow state.db-shm when it opens: "disk I/O error", with no hint."""
    with pytest.raises(StoreError) as info, db_errors("opening sqlite:///state.db"):
        raise sa.exc.OperationalError("SELECT 1", {}, Exception("disk I/O error"))
    assert "is that disk full" in (info.value.hint or "")


def test_0015_makes_every_key_again_a_thousand_papers_at_a_time(store_url: str) -> None:
    abstracts = [" ".join(f"w{n}x{i}" for i in range(45)) for n in range(2500)]
    _papers_before(store_url, "0015", [(f"Paper {n}", a) for n, a in enumerate(abstracts)])  # no keys
    engine = make_engine(sa.make_url(store_url))
    assert migrate(engine)[0] == "0015_abstract_keys"
    with engine.connect() as conn:
        keys = dict(conn.execute(sa.text("SELECT abstract, abstract_key FROM papers")).all())
    engine.dispose()
    assert keys == {a: abstract_key(a) for a in abstracts}


def test_a_postgresql_database_whose_tables_were_dropped_is_made_again(pg_url: str) -> None:
    """Migration 0018's trigger function outlives the tables dropped to start a database afresh: making
    them again failed with 'function "dumps_by_an_older_version" already exists'."""
    engine = make_engine(sa.make_url(pg_url))
    migrate(engine)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {', '.join(t.name for t in metadata.sorted_tables)} CASCADE"))
    assert migrate(engine) == [name for name, _ in MIGRATIONS]
    engine.dispose()
