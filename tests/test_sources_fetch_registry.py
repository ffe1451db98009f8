"""The Source seam and the ``sources`` setting."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

from newsletter.config import Settings
from newsletter.errors import ConfigError
from newsletter.sources.arxivfetch import ArxivSource
from newsletter.sources.fetch import HfDailySource
from newsletter.sources.registry import (
    DEFAULT_SOURCES,
    FolderSource,
    Source,
    parse_sources,
    sources_from_settings,
)

from .conftest import ROOT
from .helpers import cli

NOW = datetime(2024, 3, 19, 9, 30, tzinfo=UTC)


def build(spec: Any, tmp_path: Path) -> list[Source]:
    return parse_sources(spec, dumps_dir=tmp_path / "dumps", state_dir=tmp_path / "state")


def problem(spec: Any, tmp_path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        build(spec, tmp_path)
    assert info.value.hint
    return str(info.value)


def test_folder_source_fetches_nothing(tmp_path: Path) -> None:
    source = FolderSource(tmp_path)
    assert source.fetch(NOW) == []
    assert source.name == "folder"


def test_folder_and_hf_daily_with_options(tmp_path: Path) -> None:
    folder, hf = build(
        [
            {"kind": "folder"},
            {
                "kind": "hf-daily",
                "days_back": 1,
                "base_url": "http://127.0.0.1:8000/",
                "timeout": 5,
                "max_retries": 2,
            },
        ],
        tmp_path,
    )
    assert isinstance(folder, FolderSource) and folder.dumps_dir == tmp_path / "dumps"
    assert isinstance(hf, HfDailySource)
    assert (hf.base_url, hf.days_back, hf.timeout, hf.max_retries) == ("http://127.0.0.1:8000", 1, 5.0, 2)
    assert hf.dumps_dir == tmp_path / "dumps"


def test_hf_daily_defaults(tmp_path: Path) -> None:
    (hf,) = build([{"kind": "hf-daily"}], tmp_path)
    assert isinstance(hf, HfDailySource)
    assert (hf.base_url, hf.days_back, hf.timeout, hf.max_retries) == ("https://huggingface.co", 3, 20.0, 4)


def test_empty_list_means_no_sources(tmp_path: Path) -> None:
    assert build([], tmp_path) == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([{"kind": "rss"}], "field 'sources[0]': unknown kind 'rss' (one of folder, hf-daily, arxiv)"),
        ([{"days_back": 2}], "field 'sources[0]': missing 'kind'"),
        (
            [{"kind": "folder"}, {"kind": "hf-daily", "days_back": -1}],
            "field 'sources[1].days_back': should be greater than or equal to 0",
        ),
        (
            [{"kind": "hf-daily", "days_bak": 2}],
            "field 'sources[0].days_bak': unknown key (did you mean 'days_back'?)",
        ),
        ([{"kind": "folder", "path": "x"}], "field 'sources[0].path': unknown key"),
        (
            [{"kind": "hf-daily", "base_url": "ftp://example.org"}],
            "field 'sources[0].base_url': must be an http(s) URL",
        ),
        (  # as NEWSLETTER_API_BASE_URL refuses it: one rule for both
            [{"kind": "hf-daily", "base_url": "https://hf.example.org:99999"}],
            "field 'sources[0].base_url': must be an http(s) URL",
        ),
        (  # urlsplit drops a line break; httpx refused it later, with a traceback
            [{"kind": "hf-daily", "base_url": "https://hf.example.org/a\nb"}],
            "field 'sources[0].base_url': must be an http(s) URL",
        ),
        ([{"kind": "hf-daily", "timeout": 0}], "field 'sources[0].timeout': should be greater than 0"),
        (
            [{"kind": "hf-daily", "max_retries": "many"}],
            "field 'sources[0].max_retries': expected a whole number",
        ),
        ({"kind": "folder"}, "field 'sources': expected a list"),
        (  # a TOML string where a list goes: it said "Input should be a valid tuple"
            [{"kind": "arxiv", "categories": "cs.LG"}],
            "field 'sources[0].categories': expected a list",
        ),
        (["folder"], "field 'sources[0]': should be a valid dictionary"),
        ([{"kind": "folder"}, {"kind": "folder"}], "field 'sources[1]': duplicate of an earlier entry"),
    ],
)
def test_invalid_specs_name_the_entry_and_field(spec: Any, message: str, tmp_path: Path) -> None:
    text = problem(spec, tmp_path)
    assert text.startswith("invalid setting ")
    assert message in text


def test_two_hf_daily_mirrors_are_allowed(tmp_path: Path) -> None:
    sources = build(
        [{"kind": "hf-daily"}, {"kind": "hf-daily", "base_url": "https://hf-mirror.example"}], tmp_path
    )
    assert [s.base_url for s in sources] == ["https://huggingface.co", "https://hf-mirror.example"]  # type: ignore[attr-defined]


class _SettingsWithSources(Settings):
    """Settings plus the field this module asks for (until config.py has it)."""

    sources: list[dict[str, Any]] = Field(default_factory=lambda: [dict(s) for s in DEFAULT_SOURCES])


def test_sources_from_settings_reads_the_env_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    spec = [{"kind": "folder"}, {"kind": "hf-daily", "days_back": 2}]
    monkeypatch.setenv("NEWSLETTER_SOURCES", json.dumps(spec))
    monkeypatch.setenv("NEWSLETTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NEWSLETTER_DUMPS", str(tmp_path / "in"))
    folder, hf = sources_from_settings(_SettingsWithSources())
    assert isinstance(folder, FolderSource) and folder.dumps_dir == tmp_path / "in"
    assert isinstance(hf, HfDailySource) and hf.days_back == 2
    assert hf._state.path == tmp_path / "home" / "sources" / "hf-daily.json"


def test_sources_from_settings_reads_toml_tables(tmp_path: Path) -> None:
    (tmp_path / "newsletter.toml").write_text(
        '[[sources]]\nkind = "hf-daily"\nbase_url = "http://127.0.0.1:9"\n'
    )
    (hf,) = sources_from_settings(_SettingsWithSources())  # the cwd is tmp_path (conftest)
    assert isinstance(hf, HfDailySource) and hf.base_url == "http://127.0.0.1:9"


def test_sources_from_settings_without_the_field_is_the_folder(tmp_path: Path) -> None:
    (only,) = sources_from_settings(Settings(dumps=tmp_path))
    assert isinstance(only, FolderSource) and only.dumps_dir == tmp_path


def test_an_arxiv_source_with_its_options(tmp_path: Path) -> None:
    (feed,) = build(
        [
            {
                "kind": "arxiv",
                "categories": ["cs.LG", " stat.ML"],
                "base_url": "http://127.0.0.1:9/",
                "timeout": 5,
            }
        ],
        tmp_path,
    )
    assert isinstance(feed, ArxivSource) and isinstance(feed, Source)
    assert feed.url == "http://127.0.0.1:9/rss/cs.LG+stat.ML"
    assert feed.timeout == 5


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"kind": "arxiv"}, "field 'sources[0].categories': required, and missing"),
        ({"kind": "arxiv", "categories": []}, "field 'sources[0].categories'"),
        ({"kind": "arxiv", "categories": ["cs LG"]}, "'cs LG' is not an arXiv category such as cs.LG"),
        ({"kind": "arxiv", "categories": ["cs.LG"], "days_back": 2}, "'sources[0].days_back': unknown key"),
    ],
)
def test_invalid_arxiv_specs_name_the_field(spec: Any, message: str, tmp_path: Path) -> None:
    assert message in problem([spec], tmp_path)


def test_every_problem_of_the_sources_is_listed_with_the_example_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the first was said: a newsletter.toml with three mistakes took three rounds of `check`."""
    (tmp_path / "subscribers.yaml").write_text((ROOT / "subscribers.example.yaml").read_text())
    (tmp_path / "seeds").mkdir()
    (tmp_path / "newsletter.toml").write_text(
        '[[sources]]\nkind = "arxiv"\n\n[[sources]]\nkind = "hf-daily"\ndays_back = "x"\n\n[[sources]]\nkind = "nope"\n'
    )
    proc = cli({}, "check", check=False, cwd=tmp_path)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 1 and proc.stderr.count("hint: sources are tables such as [[sources]]") == 1
    assert [e.split(": ", 2)[1] for e in errors] == [
        "invalid setting field 'sources[0].categories'",
        "invalid setting field 'sources[1].days_back'",
        "invalid setting field 'sources[2]'",
    ]
    assert [e.rsplit("(", 1)[1] for e in errors] == [  # the key's line, else its entry's [[sources]] line
        "newsletter.toml, line 1)",
        "newsletter.toml, line 6)",
        "newsletter.toml, line 8)",
    ]
    assert "3 problems found" in proc.stderr
