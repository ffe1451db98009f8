"""Each state database has its own random value, so two installations never share a Message-ID."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from newsletter.store import MIGRATIONS, Store
from newsletter.store.engine import make_engine
from newsletter.store.migrations import migrate

from .helpers import add_dumps, cli, make_env, outbox, seed_names

NOW = "2026-03-11T08:00:00Z"


def _message_ids(tmp_path: Path) -> dict[str, str]:
    tmp_path.mkdir()
    env = make_env(tmp_path)
    add_dumps(env, seed_names()[0])
    cli(env, "run", "--now", NOW)
    return {m["To"].addresses[0].addr_spec: str(m["Message-ID"]) for m in outbox(env)}


def test_two_installations_with_the_same_inputs_give_different_message_ids(tmp_path: Path) -> None:
    first, second = _message_ids(tmp_path / "one"), _message_ids(tmp_path / "two")
    assert first.keys() == second.keys() and len(first) >= 2
    assert not set(first.values()) & set(second.values())


def test_the_value_is_made_once_by_a_named_migration_and_kept(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    engine = make_engine(sa.make_url(url))
    migrate(engine, MIGRATIONS[:2])  # a database from before the migration
    engine.dispose()
    with Store(url) as store:
        assert "0003_installation" in store.migrations_applied
        nonce = store.installation_nonce
    assert len(nonce) == 32 and int(nonce, 16) >= 0
    with Store(url) as again:
        assert again.installation_nonce == nonce
    with Store(f"sqlite:///{tmp_path / 'other.db'}") as other:
        assert other.installation_nonce != nonce
