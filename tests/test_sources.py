"""The source registry: a new HQ source is one class, and nothing else needs an edit."""

from __future__ import annotations

import pytest

from etl import sources, state
from etl.extract.streams import FormStream
from etl.sync import run_sync
from tests.conftest import make_settings
from tests.matching import assert_forms_match


@pytest.fixture
def extra_source():
    @sources.register
    class ArchivedForms(sources.Forms):
        """Say, only the archived forms, into the same tables (a test-only source)."""

        name = "archived_forms"
        default = False

        @classmethod
        def stream(cls, client, domain, settings, partition=""):
            stream = FormStream(client, domain, 50)
            stream.extra_params = {"include_archived": "true"}
            return stream

    yield ArchivedForms
    sources.SOURCES.pop("archived_forms")


def test_a_registered_source_is_a_stream_everywhere(extra_source, sim, schema, pg_url,
                                                    warehouse, db):
    assert "archived_forms" in sources.names() and "archived_forms" not in sources.names(
        default_only=True)
    settings = make_settings(sim.base_url, schema, pg_url, streams=["archived_forms"])
    assert settings.streams == ["archived_forms"]  # the settings know it
    reports = run_sync(settings, warehouse)
    assert [(r.stream, r.status) for r in reports] == [("archived_forms", "ok")]
    assert_forms_match(db, schema, sim)
    assert state.load_checkpoint(db, schema, "demo", "archived_forms")["indexed_on"]
    # The command line offers it too.
    from etl.cli import build_parser

    args = build_parser().parse_args(["sync", "--stream", "archived_forms"])
    assert args.stream == ["archived_forms"]


def test_the_default_streams_are_the_registered_defaults_in_order():
    assert sources.names(default_only=True)[:3] == ["apps", "cases", "forms"]
    assert sources.names(backfill_only=True) == ["cases", "forms"]
    with pytest.raises(ValueError, match="unknown stream"):
        sources.get("nope")
