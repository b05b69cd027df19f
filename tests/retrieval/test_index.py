"""The hybrid tool index, with the real packaged embedding model (all-MiniLM-L6-v2)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest

from flowroute.errors import FlowrouteError
from flowroute.retrieval.embedder import MiniLMEmbedder, default_embedder
from flowroute.retrieval.index import ToolDocument, ToolIndex, tool_key
from flowroute.tools.mcp import MCPPool, MCPServer

SERVERS = Path(__file__).resolve().parents[2] / "examples" / "servers"


class Counting:
    """The real embedder, counting the texts it is asked to embed."""

    def __init__(self, inner: MiniLMEmbedder) -> None:
        self.inner = inner
        self.texts: list[str] = []

    @property
    def name(self) -> str:
        return self.inner.name

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.texts.extend(texts)
        return self.inner.embed(texts)


@pytest.fixture
def embedder() -> Counting:
    return Counting(default_embedder())


def doc(name: str, description: str, *params: str, examples: Sequence[str] = ()) -> ToolDocument:
    return ToolDocument(
        key=name,
        name=name,
        description=description,
        parameters=tuple((p, "") for p in params),
        examples=tuple(examples),
    )


TOOLS = [
    doc(
        "get_weather",
        "Current weather conditions for a city.",
        "city",
        examples=["Is it raining in Oslo right now?"],
    ),
    doc(
        "convert_currency",
        "Convert an amount of money between currencies.",
        "amount",
        "to",
        examples=["How many yen is 20 euros?"],
    ),
    doc(
        "send_email",
        "Send an email message to a recipient.",
        "to",
        "subject",
        "body",
        examples=["Mail Bob that the meeting moved to 3pm."],
    ),
    doc(
        "book_flight",
        "Book a plane ticket between two airports on a date.",
        "origin",
        "dest",
        examples=["Get me on a plane from SFO to JFK next Tuesday."],
    ),
    doc(
        "translate_text",
        "Translate text into another language.",
        "text",
        "language",
        examples=["Say 'good morning' in Portuguese."],
    ),
    doc(
        "stock_price",
        "Latest trading price of a stock ticker.",
        "ticker",
        examples=["What is NVDA trading at?"],
    ),
    doc(
        "set_timer",
        "Start a countdown timer.",
        "minutes",
        examples=["Remind me in 10 minutes that the pasta is done."],
    ),
    doc(
        "search_recipes",
        "Find cooking recipes by ingredient or dish.",
        "query",
        examples=["What can I cook with leftover rice and eggs?"],
    ),
]


@pytest.mark.parametrize("mode", ["hybrid", "dense", "tdwa", "concat"])
def test_each_tool_ranks_first_for_its_own_example(embedder: Counting, mode: Any) -> None:
    index = ToolIndex(embedder)
    index.sync(TOOLS)
    for tool in TOOLS:
        hits = index.search(tool.examples[0], 3, mode=mode)
        assert hits[0].key == tool.key, (mode, tool.examples[0], hits)


def test_bm25_and_hybrid_ranks_are_recorded(embedder: Counting) -> None:
    index = ToolIndex(embedder)
    index.sync(TOOLS)
    [hit] = index.search("convert currency amount", 1, mode="bm25")
    assert hit.key == "convert_currency" and hit.bm25_rank == 1 and hit.dense_rank is None
    best = index.search("convert 20 euros to yen", 2)
    assert best[0].key == "convert_currency"
    assert best[0].bm25_rank == 1 and best[0].dense_rank == 1
    assert best[0].as_dict()["tool"] == "convert_currency"
    assert best[0].score > best[1].score


def test_among_restricts_candidates_and_odd_queries_are_safe(embedder: Counting) -> None:
    index = ToolIndex(embedder)
    index.sync(TOOLS)
    hits = index.search("weather in Paris", 5, among=["send_email", "set_timer"])
    assert {h.key for h in hits} == {"send_email", "set_timer"}
    assert index.search("weather", 5, among=["nope"]) == []
    assert index.search("", 2)  # no lexical tokens: dense alone still ranks
    assert index.search("the of and", 2, mode="bm25") == []  # only stop words: no BM25 match
    assert ToolIndex(embedder).search("anything", 3) == []


def test_update_embeds_only_the_changed_tool(embedder: Counting) -> None:
    index = ToolIndex(embedder)
    first = index.sync(TOOLS)
    assert sorted(first.added) == sorted(t.key for t in TOOLS)
    embedder.texts.clear()

    again = index.sync(TOOLS)
    assert not again.changed and again.embedded == 0 and embedder.texts == []

    changed = doc(
        "stock_price",
        "Latest trading price and daily volume of a stock ticker.",
        "ticker",
        examples=TOOLS[5].examples,
    )
    report = index.sync([*TOOLS[:5], changed, *TOOLS[6:]])
    assert report.updated == ["stock_price"] and not report.added and not report.removed
    # the new description, and the document's concatenated text: nothing else
    assert report.embedded == 2 == len(embedder.texts)
    assert all("daily volume" in t for t in embedder.texts)
    assert index.search("trading volume of a ticker", 1)[0].key == "stock_price"

    removed = index.remove(["set_timer", "unknown"])
    assert removed.removed == ["set_timer"]
    assert "set_timer" not in {h.key for h in index.search("countdown timer", 8)}


def test_save_and_load_round_trip_without_embedding(embedder: Counting, tmp_path: Path) -> None:
    index = ToolIndex(embedder, dense="tdwa", weights={"name": 0.5, "description": 0.5})
    index.sync(TOOLS)
    index.add_examples("set_timer", ["Wake me in five minutes."])
    index.save(tmp_path / "idx")
    queries = ["weather in Paris", "buy a plane ticket", "wake me in five minutes"]
    before = [[h.key for h in index.search(q, 3)] for q in queries]

    fresh = Counting(embedder.inner)
    loaded = ToolIndex.load(
        tmp_path / "idx", fresh, dense="tdwa", weights={"name": 0.5, "description": 0.5}
    )
    assert sorted(loaded.keys()) == sorted(index.keys())
    assert loaded.document("set_timer").examples[-1] == "Wake me in five minutes."
    assert loaded.sync(TOOLS).embedded == 0  # stored examples are kept through a sync
    assert fresh.texts == []
    assert [[h.key for h in loaded.search(q, 3)] for q in queries] == before
    assert len(fresh.texts) == len(queries)  # the queries alone were embedded


def test_a_path_index_saves_itself_and_bad_files_are_named(
    embedder: Counting, tmp_path: Path
) -> None:
    path = tmp_path / "auto"
    ToolIndex(embedder, path=path).sync(TOOLS[:3])
    reopened = ToolIndex(embedder, path=path)
    assert sorted(reopened.keys()) == sorted(t.key for t in TOOLS[:3])
    (path / "index.json").write_text("{not json")
    with pytest.raises(FlowrouteError, match=r"cannot read the tool index in .*auto"):
        ToolIndex(embedder, path=path)
    with pytest.raises(FlowrouteError, match="unknown TDWA field"):
        ToolIndex(embedder, weights={"title": 1.0})


def test_documents_from_tools_split_identifiers() -> None:
    from flowroute.tools.python import Tool

    def getWeatherForecast(city_name: str, days: int = 3) -> str:
        """Forecast for a city.

        Args:
            city_name: The city.
            days: How many days ahead.
        """
        return city_name

    tool = Tool.from_function(getWeatherForecast)
    d = ToolDocument.from_tool(tool, ["Will it rain in Rome this week?"])
    assert d.key == tool_key(tool) == "getWeatherForecast"
    fields = d.field_texts()
    assert fields["name"] == "get weather forecast"
    assert fields["parameters"] == "city name: The city.; days: How many days ahead."
    assert "Will it rain" in d.text()


@pytest.mark.integration
async def test_index_follows_an_mcp_server_adding_and_removing_tools(
    embedder: Counting,
) -> None:
    server = MCPServer.stdio("faulty", sys.executable, [str(SERVERS / "faulty.py")])
    index = ToolIndex(embedder)
    async with MCPPool([server]) as pool:
        tools = await pool.tools("faulty")
        await anyio.to_thread.run_sync(index.sync, tools)
        assert "faulty.echo" in index
        index.watch(pool)
        embedder.texts.clear()

        await (await pool.tool("faulty", "add_tool")).call({"name": "zebra_counter"})
        with anyio.fail_after(10):
            while "faulty.zebra_counter" not in index:
                await anyio.sleep(0.05)
        # only the new tool's texts were embedded
        assert embedder.texts and all("zebra" in t.lower() for t in embedder.texts)
        assert index.search("zebra counter", 1)[0].key == "faulty.zebra_counter"

        await (await pool.tool("faulty", "remove_tool")).call({"name": "zebra_counter"})
        with anyio.fail_after(10):
            while "faulty.zebra_counter" in index:
                await anyio.sleep(0.05)
        assert "faulty.zebra_counter" not in {h.key for h in index.search("zebra counter", 5)}


async def test_examples_are_generated_once_and_kept(embedder: Counting, tmp_path: Path) -> None:
    from flowroute.models.testing import FunctionModel

    prompts: list[str] = []

    def reply(request: Any) -> str:
        prompts.append(request.as_prompt())
        if "Tool: stock_price" in request.as_prompt():
            return '["What is AAPL trading at?", "Price of TSLA now", "Quote for MSFT"]'
        return '["one", "two", "three"]'

    model = FunctionModel(reply)
    index = ToolIndex(embedder, path=tmp_path / "idx")
    index.sync([doc("stock_price", "Latest price of a stock ticker.", "ticker"), TOOLS[0]])
    made = await index.generate_examples(model, ["stock_price", "get_weather"])
    assert made == {
        "stock_price": ("What is AAPL trading at?", "Price of TSLA now", "Quote for MSFT")
    }
    assert "Description: Latest price of a stock ticker." in prompts[0]
    assert len(prompts) == 1  # get_weather has examples of its own
    reloaded = ToolIndex(embedder, path=tmp_path / "idx")
    assert "Quote for MSFT" in reloaded.document("stock_price").examples
    assert await reloaded.generate_examples(model, ["stock_price"]) == {}  # generated once
    with pytest.raises(FlowrouteError, match="no tool 'nope' in the index"):
        await index.generate_examples(model, ["nope"])
