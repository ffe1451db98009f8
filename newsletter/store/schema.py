"""The current shape of the tables, for queries. Migrations (migrations.py) create and change them.

Keep this file in step with the latest migration; tests/test_store_migrations.py compares the two.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect

from newsletter.store.records import STATUSES


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC in and out. SQLite keeps naive UTC text; PostgreSQL a timestamptz."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: the store takes timezone-aware datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def status_check(name: str = "ck_digests_status") -> sa.CheckConstraint:
    allowed = ", ".join(f"'{s}'" for s in STATUSES)
    return sa.CheckConstraint(f"status IN ({allowed})", name=name)


metadata = sa.MetaData()

schema_migrations = sa.Table(
    "schema_migrations",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("applied_at", UTCDateTime, nullable=False),
)

dumps = sa.Table(
    "dumps",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("content_hash", sa.String(128), nullable=False, unique=True),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("format", sa.String(32), nullable=False),
    sa.Column("listed_on", sa.String(64)),
    sa.Column("ingested_at", UTCDateTime, nullable=False),
    sa.Column("papers", sa.Integer, nullable=False),
    sa.Column("new", sa.Integer, nullable=False),
    sa.Column("written_by", sa.Integer),  # how many migrations the code that stored it knew (0018)
)

OLD_WRITER = (
    "this database was brought up to date by a newer version of newsletter: stop this process and "
    "start it with that version"
)


def old_writer_refusal(dialect: str) -> list[str]:
    """The trigger refusing a dump stored without ``written_by``: by a process of a version before it
    (migration 0018). The function is replaced: it outlives the tables dropped to start a database
    afresh."""
    if dialect == "postgresql":
        function = (
            "CREATE OR REPLACE FUNCTION dumps_by_an_older_version() RETURNS trigger AS $$ BEGIN "
            f"IF {_UNMARKED} THEN RAISE EXCEPTION '{OLD_WRITER}'; END IF; RETURN NEW; "
            "END $$ LANGUAGE plpgsql"
        )
        trigger = "FOR EACH ROW EXECUTE FUNCTION dumps_by_an_older_version()"
        return [function, f"CREATE TRIGGER dumps_by_an_older_version BEFORE INSERT ON dumps {trigger}"]
    refuse = f"BEGIN SELECT RAISE(ABORT, '{OLD_WRITER}'); END"
    return [f"CREATE TRIGGER dumps_by_an_older_version BEFORE INSERT ON dumps WHEN {_UNMARKED} {refuse}"]


_UNMARKED = "NEW.written_by IS NULL"


def _refuse_old_writers(target: sa.Table, connection: Connection, **_: object) -> None:
    for statement in old_writer_refusal(connection.dialect.name):
        connection.execute(sa.text(statement))


sa.event.listen(dumps, "after_create", _refuse_old_writers)

papers = sa.Table(
    "papers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.Text, nullable=False, unique=True),
    sa.Column("arxiv_id", sa.String(64), unique=True),
    sa.Column("title_key", sa.Text, nullable=False, index=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("abstract", sa.Text, nullable=False),
    sa.Column("authors", sa.Text, nullable=False),  # JSON list of names
    sa.Column("first_seen", UTCDateTime, nullable=False),
    sa.Column("last_seen", UTCDateTime, nullable=False),
    sa.Column("first_dump_seq", sa.Integer, sa.ForeignKey("dumps.seq"), nullable=False, index=True),
    sa.Column("times_seen", sa.Integer, nullable=False),
    sa.Column("best_rank", sa.Integer, nullable=False),
    sa.Column("upvotes", sa.Integer),
    sa.Column("abstract_key", sa.String(64), index=True),  # models.abstract_key: a retitled paper
    sa.CheckConstraint("times_seen >= 1", name="ck_papers_times_seen"),
    sa.CheckConstraint("best_rank >= 1", name="ck_papers_best_rank"),
)

dump_papers = sa.Table(
    "dump_papers",
    metadata,
    sa.Column("dump_seq", sa.Integer, sa.ForeignKey("dumps.seq"), primary_key=True),
    sa.Column("paper_id", sa.Integer, sa.ForeignKey("papers.id"), primary_key=True, index=True),
    sa.Column("rank", sa.Integer, nullable=False),
    sa.CheckConstraint("rank >= 1", name="ck_dump_papers_rank"),
)

subscribers = sa.Table(
    "subscribers",
    metadata,
    sa.Column("email", sa.String(320), primary_key=True),  # stripped and lower-cased
    sa.Column("watermark_seq", sa.Integer),
    sa.Column("last_digest_at", UTCDateTime),
    sa.Column("unsubscribed_at", UTCDateTime),
    sa.Column("served_slot", UTCDateTime),  # the send slot the last digest served (migration 0011)
    sa.Column("bounced_at", UTCDateTime),  # the address refused for good; until `retry` (migration 0013)
)

digests = sa.Table(
    "digests",
    metadata,
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
    sa.Column("batch_key", sa.String(100)),  # idempotency key of its last batch request (Resend)
    sa.Column("refused", sa.Boolean),  # 'sending', refused and waiting for another try: not sent
    status_check(),
    sa.Index("ix_digests_status_created", "status", "created_at"),
    sa.Index("ix_digests_email_watermark", "email", "watermark_seq"),  # a subscriber's recent digests
)

digest_items = sa.Table(
    "digest_items",
    metadata,
    sa.Column("digest_id", sa.String(200), sa.ForeignKey("digests.id"), primary_key=True),
    sa.Column("paper_id", sa.Integer, sa.ForeignKey("papers.id"), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("why", sa.Text, nullable=False),
    sa.UniqueConstraint("digest_id", "position", name="uq_digest_items_position"),
)

vectors = sa.Table(
    "vectors",
    metadata,
    sa.Column("model", sa.String(200), primary_key=True),  # embedder name; "query:<name>" for profile texts
    sa.Column("key", sa.Text, primary_key=True),  # paper key, or "sha256:<hex>" of a profile text
    sa.Column("dim", sa.Integer, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),  # float32, little-endian
    sa.CheckConstraint("dim >= 1", name="ck_vectors_dim"),
)

installation = sa.Table(
    "installation",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("nonce", sa.String(64), nullable=False),  # random, made once per state database
    sa.CheckConstraint("id = 1", name="ck_installation_one_row"),
)

paper_details = sa.Table(
    "paper_details",
    metadata,
    sa.Column("paper_id", sa.Integer, sa.ForeignKey("papers.id"), primary_key=True),
    sa.Column("comments", sa.Integer),
    sa.Column("ai_summary", sa.Text),
    sa.Column("ai_keywords", sa.Text),  # JSON list of phrases
    sa.Column("github_repo", sa.Text),
    sa.Column("github_stars", sa.Integer),
    sa.Column("project_page", sa.Text),
    sa.Column("organization", sa.Text),
    sa.Column("thumbnail", sa.Text),
    sa.Column("listed_at", UTCDateTime),
    sa.Column("hf_page", sa.Text),
)

rejected_files = sa.Table(
    "rejected_files",
    metadata,
    sa.Column("content_hash", sa.String(128), primary_key=True),  # sha256 of the file's bytes
    sa.Column("path", sa.Text, primary_key=True),  # the same bytes under another name are reported too
    sa.Column("problem", sa.Text, nullable=False),  # the one-line error, as reported then
    sa.Column("first_seen", UTCDateTime, nullable=False),
)

feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("email", sa.String(320), primary_key=True),  # stripped and lower-cased
    sa.Column("paper_id", sa.Integer, sa.ForeignKey("papers.id"), primary_key=True),
    sa.Column("kind", sa.String(8), nullable=False),  # "more" | "less"
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.CheckConstraint("kind IN ('more', 'less')", name="ck_feedback_kind"),
)
