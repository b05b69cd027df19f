"""A* plan search over tool calls, with scripted models and real Python tools."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import flowroute as fr
from flowroute.models.testing import FunctionModel
from flowroute.planning.search import PlanMemory, search_tree_mermaid


def call(name: str, **arguments: Any) -> str:
    return json.dumps({"calls": [{"name": name, "arguments": arguments}]})


def final(value: Any) -> str:
    return json.dumps({"final": value})


class Log:
    def __init__(self) -> None:
        self.runs: list[str] = []


def tools(log: Log) -> list[Any]:
    @fr.tool(pure=True)
    def find_flight(city: str) -> str:
        """Find a flight to a city."""
        log.runs.append(f"find_flight:{city}")
        if city == "Atlantis":
            raise ValueError("no such city")
        return f"FL-{city[:3].upper()}"

    @fr.tool
    def book(flight: str) -> str:
        """Book a flight (has side effects)."""
        log.runs.append(f"book:{flight}")
        return f"booked {flight}"

    return [find_flight, book]


def scripted(plan: dict[str, list[str]]) -> FunctionModel:
    """Replies by the last step in the prompt; several replies are the k samples in order."""
    counters: dict[str, int] = {}

    def reply(request: fr.ModelRequest) -> str:
        prompt = request.as_prompt()
        state = "root"
        for marker in plan:
            if marker != "root" and marker in prompt:
                state = marker
        options = plan[state]
        i = counters.get(state, 0)
        counters[state] = i + 1
        return options[i % len(options)]

    return FunctionModel(reply, name="planner")


# the greedy (most likely) first step is a trap: a city with no flights
PLAN = {
    "root": [
        call("find_flight", city="Atlantis"),
        call("find_flight", city="Atlantis"),
        call("find_flight", city="Oslo"),
    ],
    "FL-OSL": [call("book", flight="FL-OSL")],
    "booked FL-OSL": [final("booked FL-OSL")],
    "(simulated": [final("booked FL-OSL")],
}


def build(model: Any, log: Log, **search: Any) -> fr.Workflow[Any]:
    @fr.plan_search(model=model, tools=tools(log), **search)
    def trip(goal: str) -> str:
        "{{ goal }}"

    @fr.workflow
    def wf(goal: str) -> Any:
        return trip(goal)

    return wf  # type: ignore[no-any-return]


def test_a_star_avoids_the_trap_that_greedy_falls_into() -> None:
    log = Log()
    greedy = build(scripted(PLAN), log, k=1, max_expansions=5)
    result = greedy.run(goal="Book me a flight somewhere north")
    assert result.records["trip"].status == "failed"
    assert "plan search no plan" in (result.records["trip"].error or "")

    log = Log()
    result = build(scripted(PLAN), log, k=3, max_expansions=10).run(goal="Book me a flight")
    assert result.output == "booked FL-OSL", result.records["trip"].error
    tree = result.records["trip"].trace[-1]
    assert tree["status"] == "solved"
    chosen = [tree["states"][i] for i in tree["chosen"]]
    assert [s["call"]["name"] for s in chosen if s["call"]] == ["find_flight", "book"]
    trap = next(
        s for s in tree["states"] if s["call"] and s["call"]["arguments"] == {"city": "Atlantis"}
    )
    assert trap["error"] and trap["votes"] == 2  # the most voted step, pruned by its error
    assert "classDef chosen" in search_tree_mermaid(tree)


def test_side_effecting_tools_only_run_once_the_plan_is_chosen() -> None:
    log = Log()
    simulated: list[str] = []

    def simulate(c: Any) -> str:
        simulated.append(c.name)
        return "(simulated booking)"

    plan = dict(PLAN)
    plan["(simulated"] = [final("booked FL-OSL")]
    wf = build(scripted(plan), log, k=3, simulate=simulate, max_expansions=10)
    result = wf.run(goal="Book me a flight")
    assert result.output == "booked FL-OSL"
    assert simulated == ["book"]
    # find_flight ran during the search (pure); book ran once, after the search, for real
    assert log.runs.count("book:FL-OSL") == 1
    assert log.runs.index("book:FL-OSL") == len(log.runs) - 1
    tree = result.records["trip"].trace[-1]
    booked = [s for s in tree["states"] if s["call"] and s["call"]["name"] == "book"]
    assert booked and not booked[0]["simulated"]


def test_budgets_stop_the_search_with_the_best_partial_plan() -> None:
    endless = {
        "root": [call("find_flight", city="Oslo")],
        "FL-OSL": [call("find_flight", city="Oslo")],
    }
    log = Log()
    result = build(scripted(endless), log, k=1, max_expansions=3).run(goal="loop")
    record = result.records["trip"]
    assert record.status == "failed"
    assert "budget exhausted (max_expansions) after 3 expansions" in (record.error or "")
    tree = record.trace[-1]
    assert tree["status"] == "budget_exhausted" and len(tree["chosen"]) >= 2
    # identical calls run once: the pure tool's result is cached
    assert log.runs.count("find_flight:Oslo") == 1

    log = Log()
    result = build(scripted(PLAN), log, k=3, max_tool_runs=1).run(goal="Book me a flight")
    assert result.records["trip"].status == "failed"  # the one run went to the trap
    assert log.runs == ["find_flight:Atlantis"]


TWO_WAYS = {
    "root": [
        call("find_flight", city="Bergen"),
        call("find_flight", city="Bergen"),
        call("find_flight", city="Oslo"),
    ],
    "FL-BER": [call("book", flight="FL-BER")],
    "FL-OSL": [call("book", flight="FL-OSL")],
    "(simulated": [final("booked")],
    '"booked FL-': [final("booked")],  # the final answer, asked again with real results
}


def test_plan_memory_guides_a_repeated_task(tmp_path: Path) -> None:
    memory = PlanMemory(tmp_path / "plans.json")
    first = build(scripted(TWO_WAYS), Log(), k=3, heuristic="memory", memory=memory)
    one = first.run(goal="Book me a flight up north")
    assert one.output == "booked"
    saved = json.loads((tmp_path / "plans.json").read_text())
    assert saved[0]["calls"] == [
        ["find_flight", {"city": "Bergen"}],
        ["book", {"flight": "FL-BER"}],
    ]
    first_tree = one.records["trip"].trace[-1]
    assert all(s["h"] == 0.0 for s in first_tree["states"])  # nothing remembered yet

    # a new process reads the file: the remembered path has h = 0, the other way h > 0
    again = build(
        scripted(TWO_WAYS),
        Log(),
        k=3,
        heuristic="memory",
        memory=PlanMemory(tmp_path / "plans.json"),
    )
    two = again.run(goal="Book me a flight up north, please")
    tree = two.records["trip"].trace[-1]
    assert two.output == "booked"
    h = {
        s["call"]["arguments"].get("city"): s["h"]
        for s in tree["states"]
        if s["call"] and s["call"]["name"] == "find_flight"
    }
    assert h == {"Bergen": 0.0, "Oslo": 2.0}
    assert tree["expansions"] <= first_tree["expansions"]


def test_bad_search_options_are_reported() -> None:
    with pytest.raises(fr.WorkflowDefinitionError, match="heuristic 'memory' needs a memory"):
        build(scripted(PLAN), Log(), heuristic="memory").validate()
    with pytest.raises(fr.WorkflowDefinitionError, match="k must be >= 1"):
        build(scripted(PLAN), Log(), k=0).validate()


def test_yaml_plan_search(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    (tmp_path / "trip_tools.py").write_text(
        "def find_flight(city: str) -> str:\n"
        "    if city == 'Atlantis':\n        raise ValueError('no such city')\n"
        "    return 'FL-' + city[:3].upper()\n\n"
        "def book(flight: str) -> str:\n    return 'booked ' + flight\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    source = """\
name: trips
inputs: {goal: string}
tools:
  find_flight: trip_tools:find_flight
  book: trip_tools:book
nodes:
  trip:
    plan_search:
      model: planner
      prompt: "{{ inputs.goal }}"
      tools: [find_flight, book]
      pure: [find_flight]
      k: 3
      heuristic: memory
      memory: plans.json
      max_expansions: 10
output: trip
"""
    (tmp_path / "trips.yaml").write_text(source)
    wf = fr.load(tmp_path / "trips.yaml")
    node = wf.nodes["trip"]
    assert node.kind == "plan_search" and node.pure == ("find_flight",)  # type: ignore[attr-defined]
    wf = dataclasses.replace(wf, models={"planner": scripted(PLAN)})
    assert wf.run(goal="Book me a flight").output == "booked FL-OSL"
    assert (tmp_path / "plans.json").exists()

    bad = source.replace("tools: [find_flight, book]", "tools: [find_flight, nope]")
    with pytest.raises(fr.WorkflowDefinitionError, match=r"trips.yaml:11: .*unknown tool 'nope'"):
        fr.loads(bad, source="trips.yaml")


def test_independent_side_effects_of_the_chosen_plan_run_together() -> None:
    import time

    import anyio

    @fr.tool
    async def notify(person: str) -> str:
        """Send a message (a side effect)."""
        await anyio.sleep(0.3)
        return f"told {person}"

    plan = {
        "root": [call("notify", person="ann")],
        '"(simulated: notify runs once the plan is chosen)"\nStep 2': [
            call("notify", person="bob")
        ],
        "Step 3": [final("done")],
    }

    @fr.plan_search(model=scripted(plan), tools=[notify], k=1)
    def tell(goal: str) -> str:
        "{{ goal }}"

    @fr.workflow
    def wf(goal: str) -> Any:
        return tell(goal)

    start = time.perf_counter()
    result = wf.run(goal="Tell Ann and Bob")
    assert result.output == "done", result.records["tell"].error
    assert time.perf_counter() - start < 0.55  # both messages sent at once, not 0.6 s in turn
    tree = result.records["tell"].trace[-1]
    assert sorted(s["call"]["arguments"]["person"] for s in tree["states"] if s["call"]) == [
        "ann",
        "bob",
    ]


def test_the_depth_limit_admits_only_an_answer_and_bad_samples_drop_alone() -> None:
    seen: list[Any] = []
    replies = iter(["not json", call("find_flight", city="Oslo")] + [final("FL-OSL it is")] * 2)

    def model(request: fr.ModelRequest) -> str:
        seen.append(request.constraint)
        return next(replies)

    @fr.plan_search(model=FunctionModel(model), tools=tools(Log()), k=2, max_depth=2)
    def trip(goal: str) -> str:
        "{{ goal }}"

    @fr.workflow
    def wf(goal: str) -> Any:
        return trip(goal)

    result = wf.run(goal="fly north")
    assert result.output == "FL-OSL it is", result.records["trip"].error
    tree = result.records["trip"].trace[-1]
    assert "does not match the schema" in tree["states"][0]["sample_errors"][0]
    # the second expansion is at the depth limit: its schema admits only {"final": ...}
    assert seen[2] is not None and "calls" not in json.dumps(seen[2].schema)
