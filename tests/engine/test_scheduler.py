"""The scheduler: parallel starts, failure isolation, retries, timeouts, limits, cancellation."""

from __future__ import annotations

import itertools
import time
from typing import Any

import anyio
import pytest

import flowroute as fr
from flowroute.models.testing import FunctionModel, TestModel


class InFlight:
    """Counts concurrent executions to prove parallelism and limits."""

    def __init__(self) -> None:
        self.now = 0
        self.max = 0

    async def hold(self, seconds: float) -> None:
        self.now += 1
        self.max = max(self.max, self.now)
        try:
            await anyio.sleep(seconds)
        finally:
            self.now -= 1


def test_independent_nodes_start_at_once() -> None:
    flight = InFlight()

    @fr.tool
    async def slow(x: int) -> int:
        await flight.hold(0.3)
        return x * 2

    @fr.tool
    def add(a: int, b: int, c: int) -> int:
        return a + b + c

    @fr.workflow
    def wf(x: int) -> int:
        return add(slow(x), slow(2), slow(3))

    start = time.perf_counter()
    result = wf.run(x=1)
    elapsed = time.perf_counter() - start
    assert result.output == 2 + 4 + 6
    assert flight.max == 3
    assert elapsed < 0.8, "three 0.3 s nodes must overlap"


def test_failed_node_skips_dependents_keeps_siblings() -> None:
    @fr.tool
    def boom(x: int) -> int:
        raise ValueError("no luck")

    @fr.tool
    def double(x: int) -> int:
        return 2 * x

    @fr.workflow
    def wf(x: int) -> dict[str, Any]:
        bad = boom(x)
        after_bad = double(bad)
        good = double(x)
        return {"bad": after_bad, "good": good}

    result = wf.run(x=5)
    assert not result.ok
    assert result.records["boom"].status == "failed"
    assert "no luck" in (result.records["boom"].error or "")
    assert result.records["double"].status == "skipped"
    assert "upstream 'boom' failed" in (result.records["double"].skip_reason or "")
    # the independent branch finished and its value is kept
    assert result.records["double_2"].status == "succeeded"
    assert result.records["double_2"].output == 10
    with pytest.raises(fr.RunFailedError) as info:
        _ = result.output
    assert info.value.result is result
    assert "boom" in str(info.value)


def test_fail_fast_cancels_running_nodes() -> None:
    @fr.tool
    async def boom() -> int:
        await anyio.sleep(0.05)
        raise RuntimeError("early failure")

    @fr.tool
    async def slow() -> int:
        await anyio.sleep(5)
        return 1

    @fr.workflow
    def wf() -> dict[str, Any]:
        return {"a": boom(), "b": slow()}

    start = time.perf_counter()
    result = wf.run(fr.RunOptions(on_failure="stop"))
    assert time.perf_counter() - start < 2
    assert result.records["boom"].status == "failed"
    assert result.records["slow"].status == "cancelled"
    assert result.status == "failed"


def test_retry_with_backoff_then_success() -> None:
    calls: list[float] = []

    @fr.tool
    def flaky() -> str:
        calls.append(time.perf_counter())
        if len(calls) < 3:
            raise ConnectionError("try again")
        return "ok"

    @fr.workflow
    def wf() -> str:
        return flaky.options(retries=2, retry_backoff=0.05)()

    result = wf.run()
    assert result.output == "ok"
    assert result.records["flaky"].attempts == 3
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1, "backoff doubles"


def test_retries_exhausted_keeps_last_error() -> None:
    @fr.tool
    def always_fails() -> str:
        raise ConnectionError("still down")

    @fr.workflow
    def wf() -> str:
        return always_fails.options(retries=1, retry_backoff=0.01)()

    result = wf.run()
    record = result.records["always_fails"]
    assert record.status == "failed" and record.attempts == 2
    assert "still down" in (record.error or "")


def test_node_timeout_fails_the_node_by_name() -> None:
    @fr.tool
    async def hang() -> str:
        await anyio.sleep(10)
        return "never"

    @fr.workflow
    def wf() -> str:
        return hang.options(timeout=0.1)()

    start = time.perf_counter()
    result = wf.run()
    assert time.perf_counter() - start < 2
    record = result.records["hang"]
    assert record.status == "failed"
    assert record.error == "node 'hang': timed out after 0.1s"


def test_global_concurrency_limit() -> None:
    flight = InFlight()

    @fr.tool
    async def work(i: int) -> int:
        await flight.hold(0.05)
        return i

    @fr.workflow
    def wf() -> int:
        handles = [work(i) for i in range(6)]
        return handles[0]

    result = wf.run(fr.RunOptions(max_concurrency=2))
    assert result.ok
    assert flight.max == 2
    assert all(r.status == "succeeded" for r in result.records.values())


def test_per_model_concurrency_limit() -> None:
    flight = InFlight()

    async def reply(request: fr.ModelRequest) -> str:
        await flight.hold(0.05)
        return "x"

    model = FunctionModel(reply, max_concurrency=1)

    @fr.llm(model=model)
    def ask(q: str) -> str:
        "Q: {{ q }}"

    @fr.workflow
    def wf(q: str) -> dict[str, Any]:
        return {"a": ask(q), "b": ask(q), "c": ask(q)}

    result = wf.run(q="hi")
    assert result.output == {"a": "x", "b": "x", "c": "x"}
    assert flight.max == 1


def test_records_carry_model_tokens_cost_and_times() -> None:
    model = TestModel(["refund"], cost_per_call=0.002, tokens_per_call=3)

    @fr.llm(model=model)
    def classify(ticket: str) -> str:
        "Ticket: {{ ticket }}"

    @fr.workflow
    def wf(ticket: str) -> str:
        return classify(ticket)

    result = wf.run(ticket="charged twice")
    rec = result.records["classify"]
    assert rec.model == "test" and rec.completion_tokens == 3 and rec.cost == 0.002
    assert (
        rec.started_at is not None and rec.ended_at is not None and rec.ended_at >= rec.started_at
    )
    assert result.cost == 0.002
    assert model.requests[0].prompt == "Ticket: charged twice"


def test_unknown_cost_is_none_not_zero() -> None:
    model = TestModel(["a"], cost_per_call=None)

    @fr.llm(model=model)
    def ask(q: str) -> str:
        "{{ q }}"

    @fr.workflow
    def wf(q: str) -> str:
        return ask(q)

    result = wf.run(q="x")
    assert result.records["ask"].cost is None
    assert result.cost is None


def test_inputs_are_checked_before_running() -> None:
    ran: list[int] = []

    @fr.tool
    def f(x: int) -> int:
        ran.append(x)
        return x

    @fr.workflow
    def wf(x: int, y: int = 3) -> int:
        return f(x)

    with pytest.raises(fr.InputError, match="missing input 'x'"):
        wf.run()
    with pytest.raises(fr.InputError, match="unknown input 'z'"):
        wf.run(x=1, z=2)
    with pytest.raises(fr.InputError, match="input 'x'"):
        wf.run(x="not a number")
    assert ran == []
    assert wf.run(x=4).output == 4


def test_invalid_tool_output_fails_the_node() -> None:
    @fr.tool
    def wrong() -> int:
        return "not an int"  # type: ignore[return-value]

    @fr.workflow
    def wf() -> int:
        return wrong()

    result = wf.run()
    assert result.records["wrong"].status == "failed"
    assert "tool 'wrong'" in (result.records["wrong"].error or "")


def test_map_item_failure_keeps_finished_items() -> None:
    @fr.tool
    def inverse(x: int) -> float:
        return 1 / x

    @fr.workflow
    def wf(xs: list[int]) -> list[float]:
        return fr.map(inverse, xs, concurrency=2)  # type: ignore[no-any-return]

    result = wf.run(xs=[1, 2, 0, 4])
    rec = result.records["map_inverse"]
    assert rec.status == "failed"
    assert "1 of 4 item(s) failed" in (rec.error or "")
    assert rec.partial_output == [1.0, 0.5, None, 0.25]


async def test_arun_inside_a_running_loop() -> None:
    @fr.tool
    async def echo(x: str) -> str:
        return x

    @fr.workflow
    def wf(x: str) -> str:
        return echo(x)

    result = await wf.arun(x="hi")
    assert result.output == "hi"
    # the sync wrapper works from inside a loop too (as in a notebook cell)
    assert wf.run(x="sync").output == "sync"


def test_ctrl_c_keeps_finished_results() -> None:
    import signal
    import threading

    @fr.tool
    def quick() -> int:
        return 7

    @fr.tool
    async def forever(x: int) -> int:
        await anyio.sleep(30)
        return x

    @fr.workflow
    def wf() -> int:
        return forever(quick())

    main_thread = threading.main_thread().ident
    assert main_thread is not None

    def interrupt() -> None:
        time.sleep(0.3)
        signal.pthread_kill(main_thread, signal.SIGINT)  # as a terminal's Ctrl-C reaches it

    threading.Thread(target=interrupt, daemon=True).start()
    start = time.perf_counter()
    with pytest.raises(fr.RunInterrupted) as info:
        wf.run()
    assert time.perf_counter() - start < 5
    records = info.value.result.records
    assert records["quick"].status == "succeeded" and records["quick"].output == 7
    assert records["forever"].status == "cancelled"
    assert info.value.result.status == "cancelled"


def test_invalid_model_output_names_node_and_model_and_keeps_raw_text() -> None:
    from typing import Literal

    model = TestModel(["maybe"], name="tiny")

    @fr.llm(model=model, output=Literal["yes", "no"])
    def decide(q: str) -> str:
        "{{ q }}"

    @fr.workflow
    def wf(q: str) -> str:
        return decide(q)

    result = wf.run(q="?")
    record = result.records["decide"]
    assert record.status == "failed" and record.error_type == "ModelError"
    assert record.error is not None
    assert record.error.startswith("node 'decide', model 'tiny':")
    assert "'maybe' is not one of ['yes', 'no']" in record.error
    assert "raw output: 'maybe'" in record.error
    assert record.calls[0].ok is False
