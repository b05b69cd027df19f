"""The Python front end: @tool, @llm and @workflow (tracing), branches, fan-out, running."""

from __future__ import annotations

from typing import Any, Literal

import anyio
import pytest
from pydantic import BaseModel

import flowroute as fr
from flowroute.graph.kinds import LLMNode, ToolNode
from flowroute.graph.nodes import INPUTS, Const, FirstOf, MapNode, Ref
from flowroute.models.base import ModelRequest
from flowroute.models.testing import FunctionModel, TestModel


class Order(BaseModel):
    id: str
    total: float


class InFlight:
    """Counts how many calls are running at the same moment."""

    def __init__(self) -> None:
        self.now = 0
        self.max = 0
        self.calls = 0

    async def hold(self, seconds: float) -> None:
        self.now += 1
        self.calls += 1
        self.max = max(self.max, self.now)
        try:
            await anyio.sleep(seconds)
        finally:
            self.now -= 1


def echo_model() -> FunctionModel:
    """Replies with the prompt it was given, so tests can see what was rendered."""
    return FunctionModel(lambda request: request.as_prompt())


# -- @tool -----------------------------------------------------------------------------------


class TestTool:
    def test_json_schema_comes_from_hints_defaults_and_docstring(self) -> None:
        @fr.tool
        def search(query: str, limit: int = 5, exact: bool = False) -> list[str]:
            """Search the help center.

            Args:
                query: Words to look for.
                limit: How many results
                    to return at most.
            """
            return [query] * limit

        tool = search.tool
        assert tool.name == "search"
        assert tool.description == "Search the help center."
        schema = tool.json_schema
        assert schema["type"] == "object"
        assert schema["required"] == ["query"]
        props = schema["properties"]
        assert props["query"]["type"] == "string"
        assert props["query"]["description"] == "Words to look for."
        assert props["limit"]["type"] == "integer"
        assert props["limit"]["default"] == 5
        assert props["limit"]["description"] == "How many results to return at most."
        assert props["exact"]["type"] == "boolean"
        assert "description" not in props["exact"]
        assert tool.return_type.schema == {"type": "array", "items": {"type": "string"}}

    def test_pydantic_parameters_and_results_are_typed(self) -> None:
        @fr.tool
        def total(order: Order) -> float:
            return order.total

        assert total.tool.json_schema["properties"]["order"]["$ref"] == "#/$defs/Order"
        assert total.tool.parameters["order"].python_type is Order

    def test_outside_a_workflow_a_tool_is_a_plain_function(self) -> None:
        @fr.tool
        def add(a: int, b: int) -> int:
            return a + b

        assert add(2, 3) == 5
        assert add.__name__ == "add"

    def test_sync_and_async_tools_run_as_nodes(self) -> None:
        @fr.tool
        def double(n: int) -> int:
            return 2 * n

        @fr.tool
        async def increment(n: int) -> int:
            await anyio.sleep(0)
            return n + 1

        @fr.workflow
        def wf(n: int) -> int:
            return increment(double(n))

        assert isinstance(wf.nodes["double"], ToolNode)
        result = wf.run(n=4)
        assert result.ok
        assert result.output == 9
        assert result.records["double"].output == 8
        assert result.records["increment"].status == "succeeded"

    def test_tool_results_are_validated_against_the_return_hint(self) -> None:
        @fr.tool
        def liar(n: int) -> int:
            return "not a number"  # type: ignore[return-value]

        @fr.workflow
        def wf(n: int) -> int:
            return liar(n)

        result = wf.run(n=1)
        assert not result.ok
        record = result.records["liar"]
        assert record.status == "failed"
        assert "return value is invalid" in (record.error or "")
        with pytest.raises(fr.RunFailedError) as info:
            _ = result.output
        assert info.value.result is result

    def test_options_rename_the_node_and_set_retries(self) -> None:
        attempts: list[int] = []

        @fr.tool
        def flaky(n: int) -> int:
            attempts.append(n)
            if len(attempts) < 2:
                raise RuntimeError("try again")
            return n

        @fr.workflow
        def wf(n: int) -> int:
            return flaky.options(name="step", retries=1, retry_backoff=0)(n)

        assert list(wf.nodes) == ["step"]
        result = wf.run(n=3)
        assert result.output == 3
        assert result.records["step"].attempts == 2

    def test_unknown_node_option_is_an_error(self) -> None:
        @fr.tool
        def noop(n: int) -> int:
            return n

        with pytest.raises(fr.FlowrouteError, match="unknown node option"):
            noop.options(retry=3)


# -- @llm ------------------------------------------------------------------------------------


class TestLLM:
    def test_docstring_is_the_prompt_template(self) -> None:
        model = echo_model()

        @fr.llm(model=model)
        def greet(name: str, mood: str) -> str:
            """Say hello to {{ name }}, who is {{ mood }}."""

        @fr.workflow
        def wf(name: str) -> str:
            return greet(name, mood="happy")

        result = wf.run(name="Ada")
        assert result.output == "Say hello to Ada, who is happy."
        assert result.records["greet"].model == "function"

    def test_returned_string_is_the_prompt_template(self) -> None:
        model = echo_model()

        @fr.llm(model=model)
        def ask(topic: str, polite: bool) -> str:
            return "Please explain {{ topic }}." if polite else "Explain {{ topic }}!"

        @fr.workflow
        def wf(topic: str) -> dict[str, Any]:
            return {"polite": ask(topic, polite=True), "blunt": ask(topic, polite=False)}

        assert wf.run(topic="tides").output == {
            "polite": "Please explain tides.",
            "blunt": "Explain tides!",
        }

    def test_without_docstring_or_returned_prompt_the_node_fails_clearly(self) -> None:
        @fr.llm(model=echo_model())
        def empty(text: str) -> str:
            pass

        @fr.workflow
        def wf(text: str) -> str:
            return empty(text)

        record = wf.run(text="x").records["empty"]
        assert record.status == "failed"
        assert "has no docstring and returned no prompt" in (record.error or "")

    def test_output_type_constrains_and_parses_the_reply(self) -> None:
        model = TestModel(['{"id": "A7", "total": 12.5}'])

        @fr.llm(model=model, output=Order)
        def extract(text: str) -> Order:
            "Extract the order from: {{ text }}"

        @fr.workflow
        def wf(text: str) -> Order:
            return extract(text)

        node = wf.nodes["extract"]
        assert isinstance(node, LLMNode)
        assert node.constraint is not None
        assert wf.run(text="order A7, 12.50").output == Order(id="A7", total=12.5)
        assert model.requests[0].constraint is node.constraint

    def test_a_reply_outside_the_output_type_fails_the_node(self) -> None:
        @fr.llm(model=TestModel(["maybe"]), output=Literal["yes", "no"])
        def decide(text: str) -> str:
            "{{ text }}?"

        @fr.workflow
        def wf(text: str) -> str:
            return decide(text)

        record = wf.run(text="ok").records["decide"]
        assert record.status == "failed"
        assert record.error_type == "ModelError"

    def test_system_prompt_and_settings_reach_the_model(self) -> None:
        model = echo_model()

        @fr.llm(model=model, system="Be brief.", settings={"max_tokens": 7, "temperature": 0.5})
        def answer(q: str) -> str:
            "{{ q }}"

        @fr.workflow
        def wf(q: str) -> str:
            return answer(q)

        wf.run(q="why?")
        (request,) = model.requests
        assert request.as_messages() == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "why?"},
        ]
        assert (request.settings.max_tokens, request.settings.temperature) == (7, 0.5)

    def test_calling_an_llm_function_outside_a_workflow_raises(self) -> None:
        @fr.llm(model=echo_model())
        def summarize(text: str) -> str:
            "Summarize {{ text }}"

        with pytest.raises(
            fr.FlowrouteError, match=r"'summarize' is an LLM node.*@flowroute\.workflow"
        ):
            summarize("hello")


# -- @workflow tracing -----------------------------------------------------------------------


@fr.tool
def get_order(order_id: str) -> Order:
    return Order(id=order_id, total=20.0)


@fr.tool
def shout(text: str) -> str:
    return text.upper()


@fr.tool
def half(x: float) -> float:
    return x / 2


class TestWorkflowTracing:
    def test_parameters_become_typed_inputs_and_calls_become_nodes(self) -> None:
        @fr.workflow
        def wf(order_id: str, loud: bool = False) -> str:
            """Look up an order."""
            return shout(get_order(order_id).id)

        assert wf.name == "wf"
        assert wf.description == "Look up an order."
        assert wf.inputs["order_id"].python_type is str
        assert wf.input_defaults == {"loud": False}
        assert list(wf.nodes) == ["get_order", "shout"]
        assert wf.nodes["get_order"].inputs == {"order_id": Ref(INPUTS, ("order_id",))}

    def test_attribute_access_on_a_handle_is_a_field_reference(self) -> None:
        @fr.workflow
        def wf(order_id: str) -> float:
            order = get_order(order_id)
            return half(order.total)

        assert wf.nodes["half"].inputs == {"x": Ref("get_order", ("total",))}
        assert wf.output == Ref("half")
        assert wf.run(order_id="A1").output == 10.0

    def test_handles_have_types_for_fields(self) -> None:
        seen: dict[str, str] = {}

        @fr.workflow
        def wf(order_id: str) -> Any:
            order = get_order(order_id)
            seen["order"], seen["total"] = repr(order), repr(order.total)
            return order

        assert seen == {
            "order": "<Handle get_order: Order>",
            "total": "<Handle get_order.total: float>",
        }

    def test_dict_output_mixes_references_and_constants(self) -> None:
        @fr.workflow
        def wf(order_id: str) -> dict[str, Any]:
            order = get_order(order_id)
            return {"id": order.id, "half": half(order.total), "version": 2}

        assert wf.output == {
            "id": Ref("get_order", ("id",)),
            "half": Ref("half"),
            "version": Const(2),
        }
        assert wf.run(order_id="B2").output == {"id": "B2", "half": 10.0, "version": 2}

    def test_repeated_calls_get_unique_node_names(self) -> None:
        @fr.workflow
        def wf(text: str) -> str:
            return shout(shout(shout(text)))

        assert list(wf.nodes) == ["shout", "shout_2", "shout_3"]
        assert wf.run(text="a").output == "A"

    def test_bool_of_a_handle_raises_a_helpful_error(self) -> None:
        with pytest.raises(fr.FlowrouteError, match=r"flowroute\.when") as info:

            @fr.workflow
            def wf(order_id: str) -> Any:
                order = get_order(order_id)
                if order.total:
                    return order
                return None

        assert "'get_order.total' is only known when the workflow runs" in str(info.value)

    def test_iterating_a_handle_raises_a_helpful_error(self) -> None:
        with pytest.raises(fr.FlowrouteError, match=r"flowroute\.map"):

            @fr.workflow
            def wf(texts: list[str]) -> Any:
                return [shout(t) for t in texts]

    def test_wrong_arguments_are_reported_with_the_function_name(self) -> None:
        with pytest.raises(fr.FlowrouteError, match=r"shout: .*unexpected keyword argument 'txt'"):

            @fr.workflow
            def wf(text: str) -> str:
                return shout(txt=text)

    def test_branch_helpers_outside_a_workflow_raise(self) -> None:
        with pytest.raises(fr.FlowrouteError, match="only valid inside a @workflow"):
            fr.first_of()
        with pytest.raises(fr.FlowrouteError, match="only valid inside a @workflow"):
            fr.map(shout, [])  # type: ignore[arg-type]
        with (
            pytest.raises(fr.FlowrouteError, match="only valid inside a @workflow"),
            fr.when(
                "x",
                "y",  # type: ignore[arg-type]
            ),
        ):
            pass


# -- when / first_of -------------------------------------------------------------------------


def routing_workflow(ran: list[str]) -> fr.Workflow[Any]:
    router = FunctionModel(
        lambda r: "refund" if "money" in r.as_prompt() else "question", name="router"
    )

    @fr.llm(model=router, output=Literal["refund", "bug", "question"])
    def classify(ticket: str) -> str:
        "Ticket: {{ ticket }}\nCategory:"

    @fr.tool
    def refund(ticket: str) -> str:
        ran.append("refund")
        return "refund issued"

    @fr.tool
    def answer(ticket: str) -> str:
        ran.append("answer")
        return "see the FAQ"

    @fr.workflow
    def triage(ticket: str) -> dict[str, Any]:
        category = classify(ticket)
        with fr.when(category, "refund"):
            r = refund(ticket)
        with fr.when(category, "bug", "question"):
            a = answer(ticket)
        return {"category": category, "next": fr.first_of(r, a, name="next_step")}

    return triage


class TestBranches:
    def test_only_the_chosen_branch_runs(self) -> None:
        ran: list[str] = []
        wf = routing_workflow(ran)

        result = wf.run(ticket="I want my money back")
        assert result.output == {"category": "refund", "next": "refund issued"}
        assert ran == ["refund"]
        assert result.records["refund"].status == "succeeded"
        skipped = result.records["answer"]
        assert skipped.status == "skipped"
        assert "condition classify == 'bug' | 'question' not met" in (skipped.skip_reason or "")
        assert result.records["next_step"].status == "succeeded"

    def test_a_condition_may_list_several_values(self) -> None:
        ran: list[str] = []
        result = routing_workflow(ran).run(ticket="How do I log in?")
        assert result.output == {"category": "question", "next": "see the FAQ"}
        assert ran == ["answer"]
        assert result.records["refund"].status == "skipped"

    def test_conditions_and_fan_in_are_part_of_the_graph(self) -> None:
        wf = routing_workflow([])
        assert [str(c) for c in wf.nodes["refund"].when] == ["classify == 'refund'"]
        assert wf.nodes["classify"].when == ()
        first = wf.nodes["next_step"]
        assert isinstance(first, FirstOf)
        assert first.inputs == {"0": Ref("refund"), "1": Ref("answer")}
        assert first.output_type.schema == {"type": "string"}  # both branches produce str

    def test_nested_conditions_all_apply(self) -> None:
        @fr.tool
        def pick(text: str) -> str:
            return text

        @fr.workflow
        def wf(a: str, b: str) -> Any:
            with fr.when(pick(a), "x"), fr.when(pick.options(name="pick_b")(b), "y"):
                inner = shout(a)
            return fr.first_of(inner, pick.options(name="fallback")(a))

        assert len(wf.nodes["shout"].when) == 2
        assert wf.nodes["fallback"].when == ()
        assert wf.run(a="x", b="y").records["shout"].status == "succeeded"
        result = wf.run(a="x", b="n")
        assert result.records["shout"].status == "skipped"
        assert result.output == "x"  # from the fallback

    def test_when_needs_a_value(self) -> None:
        with pytest.raises(fr.FlowrouteError, match="at least one value"):

            @fr.workflow
            def wf(text: str) -> Any:
                with fr.when(shout(text)):
                    pass


# -- map -------------------------------------------------------------------------------------


class TestMap:
    def test_fan_out_and_in_keeps_item_order_and_respects_concurrency(self) -> None:
        flight = InFlight()

        @fr.tool
        async def slow_square(n: int) -> int:
            await flight.hold(0.04 if n % 2 else 0.01)
            return n * n

        @fr.workflow
        def wf(numbers: list[int]) -> list[int]:
            return fr.map(slow_square, numbers, concurrency=3)

        node = wf.nodes["map_slow_square"]
        assert isinstance(node, MapNode)
        assert node.concurrency == 3
        result = wf.run(numbers=list(range(9)))
        assert result.output == [n * n for n in range(9)]
        assert flight.calls == 9
        assert flight.max == 3  # items do run in parallel, but never more than 3 at once

    def test_other_arguments_are_shared_by_every_item(self) -> None:
        @fr.tool
        def tag(text: str, prefix: str, suffix: str = "") -> str:
            return f"{prefix}{text}{suffix}"

        @fr.workflow
        def wf(words: list[str], prefix: str) -> list[str]:
            return fr.map(tag, words, prefix=prefix, suffix="!")

        assert wf.run(words=["a", "b"], prefix="#").output == ["#a!", "#b!"]

    def test_the_item_is_the_first_parameter_not_given(self) -> None:
        @fr.tool
        def tag(prefix: str, text: str) -> str:
            return prefix + text

        @fr.workflow
        def wf(words: list[str]) -> list[str]:
            return fr.map(tag, words, prefix=">")

        assert wf.nodes["map_tag"].item_arg == "text"  # type: ignore[attr-defined]
        assert wf.run(words=["a"]).output == [">a"]

    def test_a_parameter_named_items_can_be_shared(self) -> None:
        @fr.tool
        def pick(i: int, items: list[str]) -> str:
            return items[i]

        @fr.workflow
        def wf(indexes: list[int], names: list[str]) -> list[str]:
            return fr.map(pick, indexes, items=names)

        assert wf.check() == []
        assert wf.run(indexes=[1, 0], names=["a", "b"]).output == ["b", "a"]

    def test_map_over_an_llm_function(self) -> None:
        model = FunctionModel(lambda r: r.as_prompt().upper())

        @fr.llm(model=model)
        def loud(word: str) -> str:
            "{{ word }}"

        @fr.workflow
        def wf(words: list[str]) -> list[str]:
            return fr.map(loud, words)

        result = wf.run(words=["hi", "yo"])
        assert result.output == ["HI", "YO"]
        assert len(result.records["map_loud"].calls) == 2

    def test_map_over_a_node_output_and_a_failing_item(self) -> None:
        @fr.tool
        def split(text: str) -> list[str]:
            return text.split()

        @fr.tool
        def only_short(word: str) -> str:
            if len(word) > 3:
                raise ValueError(f"{word!r} is too long")
            return word

        @fr.workflow
        def wf(text: str) -> list[str]:
            return fr.map(only_short, split(text))

        result = wf.run(text="a bb cccc")
        record = result.records["map_only_short"]
        assert record.status == "failed"
        assert "1 of 3 item(s) failed" in (record.error or "")
        assert record.partial_output == ["a", "bb", None]

    def test_map_needs_a_free_parameter_for_the_item(self) -> None:
        with pytest.raises(fr.FlowrouteError, match="no parameter left"):

            @fr.workflow
            def wf(text: str) -> Any:
                return fr.map(shout, text, text="fixed")


# -- running ---------------------------------------------------------------------------------


class TestRunning:
    def test_run_returns_output_records_and_status(self) -> None:
        @fr.workflow
        def wf(order_id: str) -> dict[str, Any]:
            return {"loud": shout(get_order(order_id).id)}

        result = wf.run(order_id="x1")
        assert isinstance(result, fr.RunResult)
        assert result.ok
        assert result.status == "succeeded"
        assert result.output == {"loud": "X1"}
        assert set(result.records) == {"get_order", "shout"}
        assert all(r.status == "succeeded" for r in result.records.values())

    def test_a_failure_keeps_the_results_of_independent_nodes(self) -> None:
        @fr.tool
        def broken(text: str) -> str:
            raise RuntimeError("boom")

        @fr.workflow
        def wf(text: str) -> dict[str, Any]:
            bad = broken(text)
            return {"bad": shout(bad), "good": shout(text)}

        result = wf.run(text="ok")
        assert not result.ok
        assert result.records["broken"].status == "failed"
        assert "boom" in (result.records["broken"].error or "")
        assert result.records["shout"].status == "skipped"
        assert result.records["shout_2"].status == "succeeded"
        assert result.records["shout_2"].output == "OK"

    def test_inputs_are_checked_before_running(self) -> None:
        @fr.workflow
        def wf(n: int) -> float:
            return half(n)

        with pytest.raises(fr.InputError, match="missing input 'n'"):
            wf.run()
        with pytest.raises(fr.InputError, match="unknown input 'm'"):
            wf.run(n=1, m=2)

    async def test_arun_runs_on_the_current_event_loop(self) -> None:
        @fr.tool
        async def wait_and_echo(text: str) -> str:
            await anyio.sleep(0)
            return text

        @fr.workflow
        def wf(text: str) -> str:
            return wait_and_echo(text)

        result = await wf.arun(text="hello")
        assert result.output == "hello"
        assert result.records["wait_and_echo"].status == "succeeded"

    async def test_run_is_safe_inside_a_running_event_loop(self) -> None:
        @fr.workflow
        def wf(text: str) -> str:
            return shout(text)

        assert wf.run(text="nb").output == "NB"

    def test_model_requests_are_recorded_per_node(self) -> None:
        model = TestModel(["one", "two"])

        @fr.llm(model=model)
        def first(text: str) -> str:
            "A {{ text }}"

        @fr.llm(model=model)
        def second(text: str) -> str:
            "B {{ text }}"

        @fr.workflow
        def wf(text: str) -> str:
            return second(first(text))

        result = wf.run(text="t")
        assert result.output == "two"
        assert [r.prompt for r in model.requests] == ["A t", "B one"]
        assert [len(result.records[n].calls) for n in ("first", "second")] == [1, 1]
        assert isinstance(model.requests[0], ModelRequest)


def test_comparing_a_handle_explains_when() -> None:
    @fr.tool
    def f(x: str) -> str:
        return x

    with pytest.raises(fr.FlowrouteError, match=r"flowroute\.when"):

        @fr.workflow
        def wf(x: str) -> str:
            y = f(x)
            if y == "a":
                return f(y)
            return y


def test_unknown_llm_option_is_rejected() -> None:
    with pytest.raises(fr.FlowrouteError, match=r"unknown option\(s\) retrys"):

        @fr.llm(model="local", retrys=3)
        def ask(q: str) -> str:
            "{{ q }}"
