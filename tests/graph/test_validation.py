"""Workflow.check() / validate(): every problem, at once, naming node, field and (for YAML) line.

Each rule is shown on a workflow built with the decorators and on one loaded from YAML.
"""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import flowroute as fr
from flowroute.errors import Problem
from flowroute.models.testing import TestModel

TOOLS_MODULE = "fr_validation_tools"
TOOLS_SOURCE = """
from pydantic import BaseModel


class Info(BaseModel):
    name: str
    size: int


def upper(text: str) -> str:
    return text.upper()


def count(n: int) -> int:
    return n + 1


def lookup(key: str) -> Info:
    return Info(name=key, size=len(key))
"""


@pytest.fixture(scope="module")
def tools_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("validation_tools")
    (folder / f"{TOOLS_MODULE}.py").write_text(TOOLS_SOURCE)
    yield folder
    sys.modules.pop(TOOLS_MODULE, None)


def load(text: str, tools_dir: Path) -> fr.Workflow[Any]:
    return fr.loads(textwrap.dedent(text), source="wf.yaml", base_dir=tools_dir)


def errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


def warnings(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "warning"]


def only(problems: list[Problem], **match: Any) -> Problem:
    found = [p for p in problems if all(getattr(p, k) == v for k, v in match.items())]
    assert len(found) == 1, f"expected one problem matching {match}, got:\n" + "\n".join(
        map(str, problems)
    )
    return found[0]


def require_litellm_backend() -> None:
    if importlib.util.find_spec("flowroute.models.litellm_model") is None:
        pytest.skip("the litellm backend (flowroute/models/litellm_model.py) does not exist yet")


def next_line() -> int:
    """The line number after the caller's: marks where the next node is created."""
    return sys._getframe(1).f_lineno + 1


# -- Python (decorators) ---------------------------------------------------------------------


class Order(BaseModel):
    id: str
    total: float


@fr.tool
def get_order(order_id: str) -> Order:
    return Order(id=order_id, total=9.5)


@fr.tool
def double(n: int) -> int:
    return 2 * n


@fr.tool
def label(text: str) -> str:
    return f"<{text}>"


MODEL = TestModel(["ok"], cycle=True)


@fr.llm(model=MODEL)
def summarize(text: str) -> str:
    "Summarize: {{ text }}"


class TestDecoratorWorkflows:
    def test_a_well_typed_workflow_has_no_problems(self) -> None:
        @fr.workflow
        def wf(order_id: str) -> dict[str, Any]:
            order = get_order(order_id)
            return {"label": label(order.id), "summary": summarize(order.id)}

        assert wf.check() == []
        assert wf.validate() == []

    def test_type_mismatch_names_node_field_and_call_site(self) -> None:
        lines: dict[str, int] = {}

        @fr.workflow
        def wf(order_id: str) -> int:
            order = get_order(order_id)
            lines["double"] = next_line()
            return double(order.id)

        p = only(wf.check(), node="double")
        assert p.severity == "error"
        assert p.field == "n"
        assert "type mismatch" in p.message
        assert "'get_order.id' produces string but integer is expected" in p.message
        assert (p.file, p.line) == (__file__, lines["double"])

    def test_integer_feeds_number_and_number_does_not_feed_string(self) -> None:
        @fr.tool
        def half(x: float) -> float:
            return x / 2

        @fr.workflow
        def wf(n: int) -> Any:
            ok = half(double(n))
            return label(half(ok))

        p = only(errors(wf.check()))
        assert (p.node, p.field) == ("label", "text")
        assert "produces number but string is expected" in p.message

    def test_unknown_field_of_a_node_output(self) -> None:
        @fr.workflow
        def wf(order_id: str) -> str:
            return label(get_order(order_id).customer)

        p = only(wf.check(), node="label")
        assert p.field == "text"
        assert p.message == "'get_order' (Order) has no field 'customer'"

    def test_unknown_model_name(self) -> None:
        @fr.llm(model="nonsense")
        def guess(text: str) -> str:
            "Guess: {{ text }}"

        @fr.workflow
        def wf(text: str) -> str:
            return guess(text)

        p = only(wf.check(), node="guess")
        assert p.field == "model"
        assert "unknown model" in p.message and "nonsense" in p.message

    def test_missing_gguf_file(self) -> None:
        @fr.llm(model=fr.models.local("/nope.gguf"))
        def guess(text: str) -> str:
            "Guess: {{ text }}"

        @fr.workflow
        def wf(text: str) -> str:
            return guess(text)

        p = only(wf.check(), node="guess")
        assert p.field == "model"
        assert "GGUF file not found: /nope.gguf" in p.message

    def test_missing_api_key_environment_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        require_litellm_backend()
        monkeypatch.delenv("SOME_UNSET_VAR", raising=False)

        @fr.llm(model=fr.models.litellm("openai/x", api_key_env="SOME_UNSET_VAR"))
        def guess(text: str) -> str:
            "Guess: {{ text }}"

        @fr.workflow
        def wf(text: str) -> str:
            return guess(text)

        p = only(wf.check(), node="guess")
        assert p.severity == "error"
        assert p.field == "model"
        assert "SOME_UNSET_VAR" in p.message

    def test_unused_input_is_a_warning(self) -> None:
        @fr.workflow
        def wf(text: str, forgotten: str) -> str:
            return label(text)

        p = only(wf.check())
        assert p.severity == "warning"
        assert p.field == "inputs.forgotten"
        assert "never used" in p.message
        assert wf.validate() == [p]  # warnings do not stop a workflow

    def test_node_whose_output_never_reaches_the_output_is_a_warning(self) -> None:
        lines: dict[str, int] = {}

        @fr.workflow
        def wf(text: str) -> str:
            lines["dangling"] = next_line()
            label(text)
            return summarize(text)

        p = only(wf.check())
        assert (p.severity, p.node) == ("warning", "label")
        assert "unreachable" in p.message
        assert p.line == lines["dangling"]

    def test_every_problem_is_reported_at_once(self) -> None:
        @fr.llm(model="nonsense")
        def guess(text: str) -> str:
            "Guess: {{ text }}"

        @fr.workflow
        def wf(order_id: str, unused: int) -> Any:
            order = get_order(order_id)
            return {
                "a": double(order.id),  # type mismatch
                "b": label(order.missing),  # unknown field
                "c": guess(order.id),  # unknown model
            }

        with pytest.raises(fr.WorkflowDefinitionError) as info:
            wf.validate()
        problems = info.value.problems
        assert {(p.node, p.field) for p in errors(problems)} == {
            ("double", "n"),
            ("label", "text"),
            ("guess", "model"),
        }
        assert [p.field for p in warnings(problems)] == ["inputs.unused"]
        message = str(info.value)
        assert message.startswith("3 problem(s) in workflow:")
        for node in ("double", "label", "guess"):
            assert f"node '{node}'" in message

    def test_an_invalid_workflow_never_starts_running(self) -> None:
        calls: list[str] = []

        @fr.tool
        def side_effect(text: str) -> str:
            calls.append(text)
            return text

        @fr.workflow
        def wf(text: str) -> Any:
            return {"ok": side_effect(text), "bad": double(text)}

        with pytest.raises(fr.WorkflowDefinitionError):
            wf.run(text="x")
        assert calls == []

    def test_prompt_template_naming_a_non_parameter_is_rejected_when_traced(self) -> None:
        @fr.llm(model=MODEL)
        def ask(question: str) -> str:
            "Answer {{ questoin }}"

        with pytest.raises(fr.WorkflowDefinitionError) as info:

            @fr.workflow
            def wf(q: str) -> str:
                return ask(q)

        p = only(info.value.problems)
        assert p.node == "ask"
        assert "'questoin', which is not a parameter" in p.message


# -- YAML ------------------------------------------------------------------------------------

HEADER = f"""\
name: wf
inputs:
  text: string
tools:
  upper: {TOOLS_MODULE}:upper
  count: {TOOLS_MODULE}:count
  lookup: {TOOLS_MODULE}:lookup
"""


class TestYamlWorkflows:
    def test_a_valid_file_has_no_problems(self, tools_dir: Path) -> None:
        wf = load(
            HEADER
            + """\
models:
  small: local
nodes:
  info:
    tool: lookup
    args: {key: "{{ inputs.text }}"}
  bigger:
    tool: count
    args: {n: "{{ info.size }}"}
  say:
    llm:
      model: small
      prompt: "{{ info.name }} has {{ bigger }} letters"
output: say
""",
            tools_dir,
        )
        assert wf.check() == []

    def test_cycle_is_reported_with_its_path_and_line(self, tools_dir: Path) -> None:
        wf = load(
            HEADER
            + """\
nodes:
  a:
    tool: upper
    args: {text: "{{ b }}"}
  b:
    tool: upper
    args: {text: "{{ a }}"}
output: b
""",
            tools_dir,
        )
        p = only(wf.check(), severity="error")
        assert "cycle" in p.message
        assert p.message.endswith(("a -> b -> a", "b -> a -> b"))
        assert p.file == "wf.yaml"
        assert p.line in (9, 12)  # the line of node 'a' or 'b'

    def test_a_node_reading_its_own_output_is_a_cycle(self, tools_dir: Path) -> None:
        wf = load(
            HEADER
            + """\
nodes:
  a:
    tool: upper
    args: {text: "{{ a }}"}
output: a
""",
            tools_dir,
        )
        p = only(wf.check(), severity="error")
        assert (p.node, p.message, p.line) == ("a", "cycle: a -> a", 9)

    def test_unknown_node_in_a_tool_argument(self, tools_dir: Path) -> None:
        wf = load(
            HEADER
            + """\
nodes:
  a:
    tool: upper
    args:
      text: "{{ ghost }}"
output: a
""",
            tools_dir,
        )
        p = only(errors(wf.check()))
        assert (p.node, p.field, p.file, p.line) == ("a", "text", "wf.yaml", 12)
        assert p.message.startswith("reference to unknown node 'ghost'")

    def test_unknown_field_and_unknown_input(self, tools_dir: Path) -> None:
        wf = load(
            HEADER
            + """\
nodes:
  info:
    tool: lookup
    args:
      key: "{{ inputs.text }}"
  a:
    tool: upper
    args:
      text: "{{ info.colour }}"
  b:
    tool: upper
    args:
      text: "{{ inputs.txt }}"
output: {a: a, b: b}
""",
            tools_dir,
        )
        problems = errors(wf.check())
        a = only(problems, node="a")
        assert (a.field, a.line) == ("text", 16)
        assert a.message == "'info' (Info) has no field 'colour'"
        b = only(problems, node="b")
        assert (b.field, b.line) == ("text", 20)
        assert b.message == "unknown workflow input 'txt' (inputs: text)"

    def test_type_mismatch_between_producer_and_tool_parameter(self, tools_dir: Path) -> None:
        wf = load(
            HEADER
            + """\
nodes:
  info:
    tool: lookup
    args: {key: "{{ inputs.text }}"}
  a:
    tool: count
    args:
      n: "{{ info.name }}"
output: a
""",
            tools_dir,
        )
        p = only(errors(wf.check()))
        assert (p.node, p.field, p.line) == ("a", "n", 15)
        assert p.message == "type mismatch: 'info.name' produces string but integer is expected"

    def test_unknown_model_points_at_the_model_line(self, tools_dir: Path) -> None:
        wf = load(
            HEADER
            + """\
nodes:
  a:
    llm:
      prompt: "{{ inputs.text }}"
      model: nonsense
output: a
""",
            tools_dir,
        )
        p = only(errors(wf.check()))
        assert (p.node, p.field, p.line) == ("a", "model", 12)
        assert "unknown model" in p.message

    def test_missing_gguf_file_directly_and_through_a_declared_model(self, tools_dir: Path) -> None:
        wf = load(
            HEADER
            + """\
models:
  big: {local: /nope.gguf}
nodes:
  a:
    llm:
      model: big
      prompt: "{{ inputs.text }}"
  b:
    llm:
      model: "local:/nope.gguf"
      prompt: "{{ inputs.text }}"
output: {a: a, b: b}
""",
            tools_dir,
        )
        problems = errors(wf.check())
        assert [(p.node, p.field, p.line) for p in problems] == [
            ("a", "model", 13),
            ("b", "model", 17),
        ]
        assert all("GGUF file not found: /nope.gguf" in p.message for p in problems)

    def test_missing_api_key_environment_variable(
        self, tools_dir: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        require_litellm_backend()
        monkeypatch.delenv("SOME_UNSET_VAR", raising=False)
        wf = load(
            HEADER
            + """\
models:
  remote: {litellm: openai/x, api_key_env: SOME_UNSET_VAR}
nodes:
  a:
    llm:
      model: remote
      prompt: "{{ inputs.text }}"
output: a
""",
            tools_dir,
        )
        p = only(errors(wf.check()))
        assert (p.node, p.field, p.line) == ("a", "model", 13)
        assert "SOME_UNSET_VAR" in p.message

    def test_unused_input_and_unreachable_node_are_warnings_with_lines(
        self, tools_dir: Path
    ) -> None:
        wf = load(
            """\
name: wf
inputs:
  text: string
  spare: string
tools:
  upper: fr_validation_tools:upper
nodes:
  used:
    tool: upper
    args: {text: "{{ inputs.text }}"}
  dangling:
    tool: upper
    args: {text: "{{ used }}"}
output: used
""",
            tools_dir,
        )
        problems = wf.check()
        assert errors(problems) == []
        spare = only(problems, field="inputs.spare")
        assert (spare.severity, spare.line) == ("warning", 4)
        dangling = only(problems, node="dangling")
        assert (dangling.severity, dangling.line) == ("warning", 11)
        assert wf.validate() == problems

    def test_reserved_node_name_is_located(self, tools_dir: Path) -> None:
        wf = load(
            HEADER
            + """\
nodes:
  inputs:
    tool: upper
    args: {text: "{{ inputs.text }}"}
output: inputs
""",
            tools_dir,
        )
        p = only(errors(wf.check()))
        assert (p.node, p.file, p.line) == ("inputs", "wf.yaml", 9)
        assert "reserved" in p.message

    def test_references_in_when_first_of_and_output_point_at_their_own_lines(
        self, tools_dir: Path
    ) -> None:
        wf = load(
            HEADER
            + """\
nodes:
  a:
    tool: upper
    args: {text: "{{ inputs.text }}"}
    when: {ref: nobody, equals: x}
  f:
    first_of:
      - a
      - phantom
output:
  first: f
  other: missing
""",
            tools_dir,
        )
        problems = errors(wf.check())
        assert [(p.node, p.field, p.line) for p in problems] == [
            ("a", "when", 12),
            ("f", "1", 16),
            (None, "output.other", 19),
        ]

    def test_every_problem_is_reported_at_once_each_naming_node_and_field(
        self, tools_dir: Path
    ) -> None:
        text = """\
name: wf
inputs:
  text: string
  spare: string
tools:
  upper: fr_validation_tools:upper
  count: fr_validation_tools:count
nodes:
  loop1:
    tool: upper
    args: {text: "{{ loop2 }}"}
  loop2:
    tool: upper
    args: {text: "{{ loop1 }}"}
  typed:
    tool: count
    args: {n: "{{ inputs.text }}"}
  modelled:
    llm:
      model: nonsense
      prompt: "{{ typed.size }}"
output: {t: typed, m: modelled, l: loop2}
"""
        with pytest.raises(fr.WorkflowDefinitionError) as info:
            load(text, tools_dir).validate()
        problems = info.value.problems
        found = {(p.node, p.field, p.line) for p in errors(problems)}
        assert found == {
            ("typed", "n", 17),
            ("modelled", "typed.size", 21),
            ("modelled", "model", 20),
            ("loop1", None, 9),
        }
        assert [(p.field, p.line) for p in warnings(problems)] == [("inputs.spare", 4)]
        assert all(p.file == "wf.yaml" for p in problems)
        assert str(info.value).startswith("wf.yaml: 4 problem(s) in workflow:")

    def test_load_time_and_graph_problems_are_reported_together(self, tools_dir: Path) -> None:
        with pytest.raises(fr.WorkflowDefinitionError) as info:
            load(
                HEADER
                + """\
nodes:
  a:
    tool: no_such_tool
    args: {text: "{{ inputs.text }}"}
  b:
    tool: upper
    args: {text: "{{ a }}"}
  c:
    tool: count
    args: {n: "{{ inputs.text }}"}
output: {b: b, c: c}
""",
                tools_dir,
            )
        problems = info.value.problems
        assert [(p.node, p.field, p.line) for p in problems] == [("a", "tool", 10), ("c", "n", 17)]
        assert "unknown tool 'no_such_tool' (tools: count, lookup, upper)" in problems[0].message
