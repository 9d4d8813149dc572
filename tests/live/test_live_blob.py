"""The live journal's copy in an Azure append blob (Azurite) equals the journal file, line for line."""

from __future__ import annotations

import asyncio

import pytest

from conftest_azurite import azure_lake_uri, azurite_conn_str  # noqa: F401  (fixtures)
from datasets.lake._azure import AzureStore
from test_live_runner import BINANCE_MULTI, SMALL_WHALE, decider_for, run_live

pytestmark = pytest.mark.services


def test_journal_is_copied_to_an_append_blob(tmp_path, azure_lake_uri):
    container = azure_lake_uri.removeprefix("az://").split("/")[0]
    blob_uri = f"az://{container}/live/journal.jsonl"
    journal = tmp_path / "j.jsonl"
    syms = ["AKROUSDT", "CTKUSDT", "KEEPUSDT", "SUSHIUSDT"]
    asyncio.run(run_live(BINANCE_MULTI, "binance_usdm", syms, decider_for(SMALL_WHALE), journal, journal_blob=blob_uri))
    text = journal.read_text()
    assert text.count("\n") == 30
    assert AzureStore(container, "live").get("journal.jsonl").decode() == text
    # a restart appends to the same blob; the events already journaled are not emitted again
    asyncio.run(run_live(BINANCE_MULTI, "binance_usdm", syms, decider_for(SMALL_WHALE), journal, journal_blob=blob_uri))
    assert journal.read_text() == text
    assert AzureStore(container, "live").get("journal.jsonl").decode() == text


def test_journal_blob_needs_a_blob_path(azure_lake_uri):
    from live.journal import AppendBlobSink

    container = azure_lake_uri.removeprefix("az://").split("/")[0]
    with pytest.raises(ValueError, match="--journal-blob needs a blob path"):
        AppendBlobSink(f"az://{container}")
