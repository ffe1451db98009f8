"""Named, ordered schema migrations, recorded in ``schema_migrations`` and applied on open.

Each migration runs in its own transaction together with the row that records it. A migration's
DDL is frozen once released: to change a table, append a new migration (and update schema.py);
never edit an old one.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from newsletter.errors import StoreError
from newsletter.models import abstract_key, normalize_arxiv_id, normalize_title, unescape
from newsletter.store.engine import transaction
from newsletter.store.lock import MIGRATION_LOCK_KEY, AdvisoryLock, uses_advisory_locks
from newsletter.store.schema import UTCDateTime, old_writer_refusal, schema_migrations, status_check

log = logging.getLogger(__name__)

Migration = tuple[str, Callable[[Connection], None]]
Guard = Callable[[], AbstractContextManager[object]]
MIGRATION_WAIT = 300.0  # seconds to wait while another process migrates the same database


def _0001_initial(conn: Connection) -> None:
    """Dumps, papers and what each dump listed; subscribers; the delivery log (digests + items)."""
    md = sa.MetaData()
    sa.Table(
        "dumps",
        md,
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("content_hash", sa.String(128), nullable=False, unique=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("format", sa.String(32), nullable=False),
        sa.Column("listed_on", sa.String(64)),
        sa.Column("ingested_at", UTCDateTime, nullable=False),
        sa.Column("papers", sa.Integer, nullable=False),
        sa.Column("new", sa.Integer, nullable=False),
    )
    sa.Table(
        "papers",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.Text, nullable=False, unique=True),
        sa.Column("arxiv_id", sa.String(64), unique=True),
        sa.Column("title_key", sa.Text, nullable=False, index=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("abstract", sa.Text, nullable=False),
        sa.Column("authors", sa.Text, nullable=False),
        sa.Column("first_seen", UTCDateTime, nullable=False),
        sa.Column("last_seen", UTCDateTime, nullable=False),
        sa.Column("first_dump_seq", sa.Integer, sa.ForeignKey("dumps.seq"), nullable=False, index=True),
        sa.Column("times_seen", sa.Integer, nullable=False),
        sa.Column("best_rank", sa.Integer, nullable=False),
        sa.Column("upvotes", sa.Integer),
        sa.CheckConstraint("times_seen >= 1", name="ck_papers_times_seen"),
        sa.CheckConstraint("best_rank >= 1", name="ck_papers_best_rank"),
    )
    sa.Table(
        "dump_papers",
        md,
        sa.Column("dump_seq", sa.Integer, sa.ForeignKey("dumps.seq"), primary_key=True),
        sa.Column("paper_id", sa.Integer, sa.ForeignKey("papers.id"), primary_key=True, index=True),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.CheckConstraint("rank >= 1", name="ck_dump_papers_rank"),
    )
    _0001_delivery_tables(md)
    md.create_all(conn)


def _0001_delivery_tables(md: sa.MetaData) -> None:
    sa.Table(
        "subscribers",
        md,
        sa.Column("email", sa.String(320), primary_key=True),
        sa.Column("watermark_seq", sa.Integer),
        sa.Column("last_digest_at", UTCDateTime),
        sa.Column("unsubscribed_at", UTCDateTime),
    )
    sa.Table(
        "digests",
        md,
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("email", sa.String(320), sa.ForeignKey("subscribers.email"), nullable=False, index=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("message_id", sa.Text),
        sa.Column("last_error", sa.Text),
        sa.Column("watermark_seq", sa.Integer, nullable=False),
        sa.Column("not_before", UTCDateTime),
        status_check(),
        sa.Index("ix_digests_status_created", "status", "created_at"),
    )
    sa.Table(
        "digest_items",
        md,
        sa.Column("digest_id", sa.String(200), sa.ForeignKey("digests.id"), primary_key=True),
        sa.Column("paper_id", sa.Integer, sa.ForeignKey("papers.id"), primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("why", sa.Text, nullable=False),
        sa.UniqueConstraint("digest_id", "position", name="uq_digest_items_position"),
    )


def _0002_vectors(conn: Connection) -> None:
    """Embedding vectors by (model, key): paper vectors by paper key, profile texts by a hash of the text."""
    md = sa.MetaData()
    sa.Table(
        "vectors",
        md,
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("dim", sa.Integer, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),  # float32, little-endian
        sa.CheckConstraint("dim >= 1", name="ck_vectors_dim"),
    )
    md.create_all(conn)


def _0003_installation(conn: Connection) -> None:
    """One row: a random value made once per state database, mixed into digest ids and so Message-IDs.

    Without it two installations (two state folders) gave the same digest ids, hence the same
    Message-IDs and Resend idempotency keys, to different emails.
    """
    md = sa.MetaData()
    table = sa.Table(
        "installation",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("nonce", sa.String(64), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_installation_one_row"),
    )
    md.create_all(conn)
    conn.execute(table.insert().values(id=1, nonce=secrets.token_hex(16)))


def _0004_paper_details(conn: Connection) -> None:
    """What listings say about a paper beyond its title and abstract; dump files refused for good."""
    md = sa.MetaData()
    sa.Table("papers", md, sa.Column("id", sa.Integer, primary_key=True))  # for the foreign key only
    sa.Table(
        "paper_details",
        md,
        sa.Column("paper_id", sa.Integer, sa.ForeignKey("papers.id"), primary_key=True),
        sa.Column("comments", sa.Integer),
        sa.Column("ai_summary", sa.Text),
        sa.Column("ai_keywords", sa.Text),
        sa.Column("github_repo", sa.Text),
        sa.Column("github_stars", sa.Integer),
        sa.Column("project_page", sa.Text),
        sa.Column("organization", sa.Text),
        sa.Column("thumbnail", sa.Text),
        sa.Column("listed_at", UTCDateTime),
        sa.Column("hf_page", sa.Text),
    )
    sa.Table(
        "rejected_files",
        md,
        sa.Column("content_hash", sa.String(128), primary_key=True),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("problem", sa.Text, nullable=False),
        sa.Column("first_seen", UTCDateTime, nullable=False),
    )
    md.create_all(conn, tables=[md.tables["paper_details"], md.tables["rejected_files"]])


def _0005_batch_key(conn: Connection) -> None:
    """The idempotency key of the batch request a digest went out in (Resend), so a resend reuses it."""
    conn.execute(sa.text("ALTER TABLE digests ADD COLUMN batch_key VARCHAR(100)"))


def _0006_feedback(conn: Connection) -> None:
    """ "More/less like this" from the digests' links: the last word per subscriber and paper."""
    md = sa.MetaData()
    sa.Table("papers", md, sa.Column("id", sa.Integer, primary_key=True))  # for the foreign key only
    sa.Table(
        "feedback",
        md,
        sa.Column("email", sa.String(320), primary_key=True),  # stripped and lower-cased
        sa.Column("paper_id", sa.Integer, sa.ForeignKey("papers.id"), primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.CheckConstraint("kind IN ('more', 'less')", name="ck_feedback_kind"),
    )
    md.tables["feedback"].create(conn)


def _0007_rejected_by_path(conn: Connection) -> None:
    """A refused file is remembered by its content and its path: the same bytes under a new name
    (an API's error page saved again the next day) are reported again."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("ALTER TABLE rejected_files DROP CONSTRAINT rejected_files_pkey"))
        conn.execute(sa.text("ALTER TABLE rejected_files ADD PRIMARY KEY (content_hash, path)"))
        return
    conn.execute(sa.text("ALTER TABLE rejected_files RENAME TO rejected_files_0006"))
    md = sa.MetaData()
    sa.Table(
        "rejected_files",
        md,
        sa.Column("content_hash", sa.String(128), primary_key=True),
        sa.Column("path", sa.Text, primary_key=True),
        sa.Column("problem", sa.Text, nullable=False),
        sa.Column("first_seen", UTCDateTime, nullable=False),
    ).create(conn)
    conn.execute(
        sa.text(
            "INSERT INTO rejected_files (content_hash, path, problem, first_seen)"
            " SELECT content_hash, path, problem, first_seen FROM rejected_files_0006"
        )
    )
    conn.execute(sa.text("DROP TABLE rejected_files_0006"))


def _0008_recent_digests(conn: Connection) -> None:
    """A subscriber's digests by window end, so planning finds the recent ones that may share papers."""
    conn.execute(sa.text("CREATE INDEX ix_digests_email_watermark ON digests (email, watermark_seq)"))


def _0009_abstract_key(conn: Connection) -> None:
    """Papers also found by their whole abstract (hashed), so a listing that corrects a title (and has
    no arXiv id) does not bring the paper again as new; filled in for the papers stored so far."""
    conn.execute(sa.text("ALTER TABLE papers ADD COLUMN abstract_key VARCHAR(64)"))
    conn.execute(sa.text("CREATE INDEX ix_papers_abstract_key ON papers (abstract_key)"))
    _key_abstracts(conn)


def _key_abstracts(conn: Connection) -> None:
    """Every paper's abstract key as ``models.abstract_key`` makes it now."""
    _key_papers(conn, "abstract", "abstract_key", abstract_key)


def _key_papers(conn: Connection, text: str, column: str, key: Callable[[str], str | None]) -> None:
    """Every paper's ``column`` made again of its ``text`` column, 1,000 papers at a time (the driver
    reads a whole result into memory: all the abstracts of a large store at once)."""
    table = sa.table("papers", sa.column("id"), sa.column(text), sa.column(column))
    query = (
        sa.select(table.c.id, table.c[text].label("source"), table.c[column].label("stored"))
        .where(table.c.id > sa.bindparam("after"))
        .order_by(table.c.id)
        .limit(1000)
    )
    update = table.update().where(table.c.id == sa.bindparam("b_id")).values({column: sa.bindparam("b_key")})
    after = 0
    while rows := list(conn.execute(query, {"after": after}) or ()):  # (): a mock engine's DDL
        keys = [{"b_id": r.id, "b_key": k} for r in rows if (k := key(r.source)) != r.stored]
        if keys:
            conn.execute(update, keys)
        after = rows[-1].id


def _0010_refused(conn: Connection) -> None:
    """A digest whose request was refused (a rate limit) and waits for another try in the run is
    marked, so a crash during the wait queues it again instead of reporting it 'unknown'."""
    conn.execute(sa.text("ALTER TABLE digests ADD COLUMN refused BOOLEAN"))


def _0011_served_slot(conn: Connection) -> None:
    """The send slot a subscriber's last digest served, recorded: read off the digest's time, a digest
    made late for one slot (07:10 for 18:00 the day before) counted as early for the next."""
    kind = UTCDateTime().compile(dialect=conn.dialect)
    conn.execute(sa.text(f"ALTER TABLE subscribers ADD COLUMN served_slot {kind}"))


def _0013_bounced(conn: Connection) -> None:
    """When a server last refused a subscriber's address for good (no such user, mailbox disabled):
    new digests wait until `newsletter retry` tries the refused one again."""
    kind = UTCDateTime().compile(dialect=conn.dialect)
    conn.execute(sa.text(f"ALTER TABLE subscribers ADD COLUMN bounced_at {kind}"))


def _0014_arxiv_ids(conn: Connection) -> None:
    """arXiv ids are read case-blind (2312.00752V2 is 2312.00752, HEP-TH/9901001 is hep-th/9901001): an
    id stored in another spelling takes the new one, or its next listing would be a new paper, sent again.
    Keys stay (the links of digests sent carry them); an id whose new spelling another paper holds
    already is left as it is."""
    _respell_arxiv_ids(conn, "%V%", "%/%")


def _respell_arxiv_ids(conn: Connection, *patterns: str) -> None:
    """Stored arXiv ids LIKE one of ``patterns`` in the spelling ``normalize_arxiv_id`` gives now."""
    table = sa.table("papers", sa.column("id"), sa.column("arxiv_id"))
    spelled_so = sa.or_(*(table.c.arxiv_id.like(p) for p in patterns))
    query = sa.select(table.c.id, table.c.arxiv_id).where(spelled_so)
    holder = sa.text("SELECT id FROM papers WHERE arxiv_id = :arxiv_id")
    update = sa.text("UPDATE papers SET arxiv_id = :arxiv_id WHERE id = :id")
    for row in list(conn.execute(query) or ()):  # (): a mock engine's DDL
        spelled = normalize_arxiv_id(row.arxiv_id)
        if (
            spelled
            and spelled != row.arxiv_id
            and conn.execute(holder, {"arxiv_id": spelled}).first() is None
        ):
            conn.execute(update, {"id": row.id, "arxiv_id": spelled})


def _0012_unescaped_text(conn: Connection) -> None:
    """Text dumps' titles and abstracts are read with HTML entities decoded ("Q&amp;A" is "Q&A"): the
    papers stored before are decoded too, or their next listing would be a new paper. Their keys stay
    (the links of digests sent carry them); their vectors, of the encoded text, go."""
    query = sa.text("SELECT id, key, title, abstract FROM papers WHERE title LIKE :e OR abstract LIKE :e")
    update = sa.text(
        "UPDATE papers SET title = :title, abstract = :abstract, title_key = :title_key, "
        "abstract_key = :abstract_key WHERE id = :id"
    )
    forget = sa.text("DELETE FROM vectors WHERE key = :key OR substr(key, 1, length(:prefix)) = :prefix")
    for row in list(conn.execute(query, {"e": "%&%;%"}) or ()):  # (): a mock engine's DDL
        title, abstract = unescape(row.title), unescape(row.abstract)
        keys = {"title_key": normalize_title(title), "abstract_key": abstract_key(abstract)}
        conn.execute(update, {"id": row.id, "title": title, "abstract": abstract, **keys})
        conn.execute(forget, {"key": row.key, "prefix": f"{row.key}#"})  # paper, title, sentences


def _0015_abstract_keys(conn: Connection) -> None:
    """Abstract keys made again: a key of an abstract's first 40 words (stored by versions before the
    whole abstract was hashed) matched no later listing, and a retitled paper came back as new."""
    _key_abstracts(conn)


def _0016_format_characters(conn: Connection) -> None:
    """Titles and abstracts are keyed without format characters (a soft hyphen or a zero-width space
    split "Trans\u00adformers" in two words): the title and abstract keys stored so far are made again,
    or the next listing of such a title would be a new paper. Keys stay (the links of digests sent
    carry them)."""
    _key_papers(conn, "title", "title_key", normalize_title)
    _key_abstracts(conn)


def _0017_old_arxiv_ids(conn: Connection) -> None:
    """An old arXiv id is read without its subject class ('math.AG/0601001' is 'math/0601001', as the
    feeds give it): an id stored with one takes the spelling read now, or its next listing would be a
    new paper, sent again. Keys stay (the links of digests sent carry them)."""
    _respell_arxiv_ids(conn, "%.%/%")


def _0018_written_by(conn: Connection) -> None:
    """Each dump records how many migrations the code that stored it knew (0: before this one), and a
    dump stored by code that knows nothing of it is refused (schema.OLD_WRITER): a process of an
    earlier version that had the database open before the upgrade and holds no run lock (``serve``
    ingests a new file on a page load) stored its papers as it knew, without their details and keys,
    and that dump was never read again."""
    conn.execute(sa.text("ALTER TABLE dumps ADD COLUMN written_by INTEGER"))
    conn.execute(sa.text("UPDATE dumps SET written_by = 0"))
    for statement in old_writer_refusal(conn.dialect.name):
        conn.execute(sa.text(statement))


MIGRATIONS: tuple[Migration, ...] = (
    ("0001_initial", _0001_initial),
    ("0002_vectors", _0002_vectors),
    ("0003_installation", _0003_installation),
    ("0004_paper_details", _0004_paper_details),
    ("0005_batch_key", _0005_batch_key),
    ("0006_feedback", _0006_feedback),
    ("0007_rejected_by_path", _0007_rejected_by_path),
    ("0008_recent_digests", _0008_recent_digests),
    ("0009_abstract_key", _0009_abstract_key),
    ("0010_refused", _0010_refused),
    ("0011_served_slot", _0011_served_slot),
    ("0012_unescaped_text", _0012_unescaped_text),
    ("0013_bounced", _0013_bounced),
    ("0014_arxiv_ids", _0014_arxiv_ids),
    ("0015_abstract_keys", _0015_abstract_keys),
    ("0016_format_characters", _0016_format_characters),
    ("0017_old_arxiv_ids", _0017_old_arxiv_ids),
    ("0018_written_by", _0018_written_by),
)


def migrate(
    engine: Engine, migrations: tuple[Migration, ...] = MIGRATIONS, guard: Guard | None = None
) -> list[str]:
    """Apply the migrations this database lacks, in order; return the names applied now. ``guard`` is
    held while those of a database made by an earlier version are applied.

    On PostgreSQL, processes opening one database at once (several hosts starting together) take
    turns on an advisory lock: each migration is applied once, and nobody sees a half-made schema.
    SQLite serialises the writers itself (BEGIN IMMEDIATE).
    """
    if not uses_advisory_locks(engine):
        return _guarded(engine, migrations, guard)
    with AdvisoryLock(engine, MIGRATION_LOCK_KEY, "migration").hold(timeout=MIGRATION_WAIT):
        return _guarded(engine, migrations, guard)


def _guarded(engine: Engine, migrations: tuple[Migration, ...], guard: Guard | None) -> list[str]:
    """_migrate, under ``guard`` when an earlier version made the database. On PostgreSQL the caller
    holds the migration lock: a second process waits there, then finds the database up to date."""
    if guard is not None and _outdated(engine, [name for name, _ in migrations]):
        with guard():
            return _migrate(engine, migrations)
    return _migrate(engine, migrations)


def _migrate(engine: Engine, migrations: tuple[Migration, ...]) -> list[str]:
    known = [name for name, _ in migrations]
    if _up_to_date(engine, known):
        return []
    with transaction(engine, write=True) as conn:
        schema_migrations.create(conn, checkfirst=True)
    _refuse_unknown(_applied(engine), known, engine.dialect.name)
    done = []
    for name, step in migrations:
        if _apply(engine, name, step):
            done.append(name)
    return done


def _up_to_date(engine: Engine, known: list[str]) -> bool:
    """Whether every migration is applied, found by reading: no write lock is asked for, so a command
    that opens the store while a writer holds SQLite's lock for a while (a prune, a VACUUM) reads on."""
    return _recorded(engine) == known


def _outdated(engine: Engine, known: list[str]) -> bool:
    """Whether an earlier version made this database (a new, empty one has no process writing into it;
    one a newer version made is refused, with no lock to wait for)."""
    recorded = _recorded(engine)
    return bool(recorded) and set(recorded or ()) < set(known)


def _recorded(engine: Engine) -> list[str] | None:
    """The migrations applied, by name; None before the first."""
    with transaction(engine, write=False) as conn:
        if not sa.inspect(conn).has_table(schema_migrations.name):
            return None
        applied = conn.execute(sa.select(schema_migrations.c.name).order_by(schema_migrations.c.name))
        return list(applied.scalars())


def _applied(engine: Engine) -> list[str]:
    with transaction(engine, write=False) as conn:
        rows = conn.execute(sa.select(schema_migrations.c.name).order_by(schema_migrations.c.name))
        return list(rows.scalars())


def _refuse_unknown(applied: list[str], known: list[str], dialect: str) -> None:
    unknown = [name for name in applied if name not in known]
    if unknown:
        other = (
            "NEWSLETTER_DATABASE_URL at another database"
            if dialect == "postgresql"
            else "NEWSLETTER_HOME at another state folder"
        )
        raise StoreError(
            f"the state database has schema migration {unknown[-1]!r}, newer than this version knows",
            hint=f"upgrade newsletter, or point {other}",
        )
    if applied != known[: len(applied)]:
        missing = next(name for name in known if name not in applied)
        raise StoreError(f"the state database skipped schema migration {missing!r}; it cannot be used")


def _apply(engine: Engine, name: str, step: Callable[[Connection], None]) -> bool:
    """Run one migration and record it, in one transaction; False when another process already did."""
    with transaction(engine, write=True) as conn:
        done = conn.execute(sa.select(schema_migrations.c.name).where(schema_migrations.c.name == name))
        if done.first() is not None:
            return False
        step(conn)
        conn.execute(schema_migrations.insert().values(name=name, applied_at=datetime.now(UTC)))
    log.info("applied schema migration %s", name)
    return True
