"""The YAML front end: workflow files -> Workflow, with file:line in every problem."""

from __future__ import annotations

import dataclasses
import inspect
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

import flowroute as fr
from flowroute.errors import Problem
from flowroute.frontends.yaml import file_schema
from flowroute.graph.kinds import ToolNode
from flowroute.graph.nodes import INPUTS, FirstOf, MapNode, Ref
from flowroute.models.base import ModelRequest
from flowroute.models.testing import FunctionModel, TestModel

ROOT = Path(__file__).resolve().parents[2]
TRIAGE = ROOT / "examples" / "triage.yaml"

TOOLS_MODULE = "fr_yaml_tools"
TOOLS_SOURCE = """
import anyio

flight = {"now": 0, "max": 0, "calls": 0}


def upper(text: str) -> str:
    return text.upper()


def count(n: int) -> int:
    return n + 1


def split(text: str) -> list[str]:
    return text.split()


async def slow_len(word: str) -> int:
    flight["now"] += 1
    flight["calls"] += 1
    flight["max"] = max(flight["max"], flight["now"])
    try:
        await anyio.sleep(0.03)
    finally:
        flight["now"] -= 1
    return len(word)
"""


@pytest.fixture(scope="module")
def tools_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("yaml_tools")
    (folder / f"{TOOLS_MODULE}.py").write_text(TOOLS_SOURCE)
    yield folder
    sys.modules.pop(TOOLS_MODULE, None)


def loads(text: str, base_dir: Path | None = None) -> fr.Workflow[Any]:
    return fr.loads(textwrap.dedent(text), source="wf.yaml", base_dir=base_dir)


def problems_of(text: str, base_dir: Path | None = None) -> list[Problem]:
    with pytest.raises(fr.WorkflowDefinitionError) as info:
        loads(text, base_dir)
    assert info.value.source == "wf.yaml"
    return info.value.problems


def where(p: Problem) -> tuple[str | None, str | None, str | None, int | None]:
    return (p.file, p.node, p.field, p.line)


TOOLS_HEADER = f"""\
name: wf
inputs:
  text: string
tools:
  upper: {TOOLS_MODULE}:upper
  count: {TOOLS_MODULE}:count
  split: {TOOLS_MODULE}:split
  slow_len: {TOOLS_MODULE}:slow_len
"""


# -- the example -----------------------------------------------------------------------------


def triage_model() -> FunctionModel:
    """Plays both LLM nodes of examples/triage.yaml, depending on the ticket."""

    def reply(request: ModelRequest) -> str:
        prompt = request.as_prompt()
        ticket = prompt.rstrip().splitlines()[-2 if prompt.rstrip().endswith("Category:") else -1]
        if prompt.rstrip().endswith("Category:"):
            return "refund" if "charged" in ticket else "bug" if "crash" in ticket else "question"
        urgency = "high" if "crash" in ticket else "normal"
        return f'{{"urgency": "{urgency}", "product": "app"}}'

    return FunctionModel(reply, name="scripted")


class TestTriageExample:
    def test_loads_and_validates(self) -> None:
        wf = fr.load(TRIAGE)
        assert wf.name == "ticket-triage"
        assert wf.source == str(TRIAGE)
        assert set(wf.nodes) == {"category", "details", "team", "policy", "help", "next_step"}
        assert wf.validate() == []

    def test_tools_are_imported_from_the_files_folder(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)  # not the examples folder
        monkeypatch.delitem(sys.modules, "triage_tools", raising=False)
        path_before = list(sys.path)

        wf = fr.load(TRIAGE)

        team = wf.nodes["team"]
        assert isinstance(team, ToolNode)
        assert Path(inspect.getfile(team.tool.fn)) == TRIAGE.parent / "triage_tools.py"
        assert sys.path == path_before  # the folder was only on the path while importing
        assert team.tool.param_docs["category"] == "The ticket's category."

    def test_conditions_and_fan_in_are_read_from_the_file(self) -> None:
        wf = fr.load(TRIAGE)
        (policy_when,) = wf.nodes["policy"].when
        assert (policy_when.ref, policy_when.values) == (Ref("category"), ("refund",))
        (help_when,) = wf.nodes["help"].when
        assert help_when.values == ("bug", "question")
        next_step = wf.nodes["next_step"]
        assert isinstance(next_step, FirstOf)
        assert next_step.inputs == {"0": Ref("policy"), "1": Ref("help")}
        assert wf.nodes["team"].inputs["urgency"] == Ref("details", ("urgency",))

    @pytest.mark.parametrize(
        ("ticket", "category", "ran", "skipped", "next_step"),
        [
            (
                "I was charged twice",
                "refund",
                "policy",
                "help",
                "Duplicate charge: refund the extra payment within 3 business days.",
            ),
            (
                "The app crashes on start",
                "bug",
                "help",
                "policy",
                "Known issues: https://help.example.com/status",
            ),
            (
                "Where is my invoice?",
                "question",
                "help",
                "policy",
                "FAQ: https://help.example.com/faq",
            ),
        ],
    )
    def test_runs_the_branch_its_category_selects(
        self, ticket: str, category: str, ran: str, skipped: str, next_step: str
    ) -> None:
        wf = dataclasses.replace(fr.load(TRIAGE), models={"small": triage_model()})

        result = wf.run(ticket=ticket)

        assert result.ok, result.error
        assert result.output["category"] == category
        assert result.output["next_step"] == next_step
        assert result.output["product"] == "app"
        assert result.records[ran].status == "succeeded"
        assert result.records[skipped].status == "skipped"
        assert "not met" in (result.records[skipped].skip_reason or "")
        urgency = "high" if category == "bug" else "normal"
        team = {"refund": "billing", "bug": "engineering", "question": "support"}[category]
        queue = "priority" if urgency == "high" else "standard"
        assert result.output["team"] == f"{team}/{queue}"


# -- problems carry file and line ------------------------------------------------------------


class TestProblemsCarryFileAndLine:
    def test_unknown_node_in_a_prompt(self) -> None:
        (p,) = problems_of("""\
            name: wf
            inputs: {text: string}
            nodes:
              a:
                llm:
                  model: local
                  prompt: "Say {{ inputs.text }} to {{ ghost.name }}"
            output: a
            """)
        assert where(p) == ("wf.yaml", "a", "prompt", 7)
        assert "'ghost.name': 'ghost' is neither 'inputs' nor a node" in p.message
        assert str(p).startswith("wf.yaml:7: error: node 'a', field 'prompt': prompt refers to")

    def test_unknown_node_in_a_block_prompt_points_at_the_prompt(self) -> None:
        (p,) = problems_of("""\
            name: wf
            nodes:
              a:
                llm:
                  prompt: |
                    Line one
                    {{ nobody }}
            output: a
            """)
        assert where(p) == ("wf.yaml", "a", "prompt", 5)

    def test_inside_a_map_the_hint_names_the_item(self) -> None:
        (p,) = problems_of("""\
            name: wf
            inputs: {xs: {type: array}}
            nodes:
              a:
                map: {over: inputs.xs, as: x}
                llm: {prompt: "{{ item }}"}
            output: a
            """)
        assert where(p) == ("wf.yaml", "a", "prompt", 6)
        assert "inside a map the item is '{{ x }}'" in p.message

    def test_unknown_tool(self, tools_dir: Path) -> None:
        (p,) = problems_of(
            TOOLS_HEADER
            + """\
nodes:
  a:
    tool: lower
    args: {text: "{{ inputs.text }}"}
output: a
""",
            tools_dir,
        )
        assert where(p) == ("wf.yaml", "a", "tool", 11)
        assert p.message == "unknown tool 'lower' (tools: count, slow_len, split, upper)"

    @pytest.mark.parametrize(
        ("target", "message"),
        [
            (f"{TOOLS_MODULE}.upper", "expected 'module:function'"),
            (f"{TOOLS_MODULE}:", "expected 'module:function'"),
            (f"{TOOLS_MODULE}:nothere", "AttributeError"),
            ("no_such_module_xyz:f", "ModuleNotFoundError: No module named 'no_such_module_xyz'"),
            (f"{TOOLS_MODULE}:flight", "is not callable"),
        ],
    )
    def test_bad_module_function(self, tools_dir: Path, target: str, message: str) -> None:
        (p,) = problems_of(
            f"""\
name: wf
inputs: {{text: string}}
tools:
  good: {TOOLS_MODULE}:upper
  bad: "{target}"
nodes:
  a:
    tool: bad
    args: {{text: "{{{{ inputs.text }}}}"}}
output: a
""",
            tools_dir,
        )
        # only the declaration is reported, not again at the node that uses it
        assert (p.file, p.field, p.line) == ("wf.yaml", "tools.bad", 5)
        assert message in p.message

    def test_extra_unknown_keys_are_rejected_with_their_lines(self) -> None:
        problems = problems_of("""\
            name: wf
            nodes:
              a:
                llm:
                  prompt: hi
                  temprature: 0.2
                retrys: 2
            output: a
            colour: blue
            """)
        assert [where(p) for p in problems] == [
            ("wf.yaml", "a", "llm.temprature", 6),
            ("wf.yaml", "a", "retrys", 7),
            ("wf.yaml", None, "colour", 9),
        ]
        assert all(p.message == "Extra inputs are not permitted" for p in problems)

    def test_invalid_values_are_reported_where_they_are(self) -> None:
        problems = problems_of("""\
            name: wf
            nodes:
              a:
                llm: {prompt: hi, max_tokens: 0}
              b:
                tool: x
                first_of: [a]
            output: a
            """)
        assert [(p.node, p.line) for p in problems] == [("a", 4), ("b", 5)]
        assert "greater than 0" in problems[0].message
        assert "exactly one of llm, agent, plan_search, tool, router" in problems[1].message

    def test_missing_required_keys(self) -> None:
        problems = problems_of("""\
            nodes:
              a:
                llm: {}
            """)
        assert {(p.field, p.message) for p in problems} == {
            ("name", "Field required"),
            ("output", "Field required"),
            ("llm.prompt", "Field required"),
        }

    def test_duplicate_keys_are_rejected_with_the_second_line(self) -> None:
        problems = problems_of("""\
            name: wf
            nodes:
              a:
                llm: {prompt: one}
              a:
                llm:
                  prompt: two
                  prompt: three
            output: a
            """)
        assert [(p.field, p.line) for p in problems] == [("nodes.a", 5), ("nodes.a.llm.prompt", 8)]
        assert problems[0].message == "duplicate key 'a'"

    @pytest.mark.parametrize(
        ("text", "line"),
        [
            ("name: wf\nnodes:\n  a:\n    llm: {prompt: [hi}\noutput: a\n", 4),
            ("name: wf\nnodes:\n  a:\n   llm: x\n    tool: y\noutput: a\n", 5),
            ("name: wf\nnodes:\n\ta: 1\n", 3),
        ],
    )
    def test_invalid_yaml_syntax_has_a_line(self, text: str, line: int) -> None:
        (p,) = problems_of(text)
        assert (p.file, p.line) == ("wf.yaml", line)
        assert p.message.startswith("not valid YAML:")

    @pytest.mark.parametrize(
        ("text", "message"),
        [("", "the file is empty"), ("- a\n- b\n", "a workflow file must be a mapping")],
    )
    def test_empty_or_non_mapping_file(self, text: str, message: str) -> None:
        (p,) = problems_of(text)
        assert (p.file, p.message) == ("wf.yaml", message)

    def test_template_syntax_error(self) -> None:
        (p,) = problems_of("""\
            name: wf
            inputs: {text: string}
            nodes:
              a:
                llm:
                  prompt: "{{ inputs.text"
            output: a
            """)
        assert where(p) == ("wf.yaml", "a", "prompt", 6)
        assert "template syntax error" in p.message

    def test_tool_argument_mixing_text_and_a_reference(self, tools_dir: Path) -> None:
        (p,) = problems_of(
            TOOLS_HEADER
            + """\
nodes:
  a:
    tool: upper
    args:
      text: "say {{ inputs.text }}"
output: a
""",
            tools_dir,
        )
        assert where(p) == ("wf.yaml", "a", "text", 13)
        assert "either a literal or exactly one '{{ reference }}'" in p.message

    def test_invalid_type_declarations(self) -> None:
        problems = problems_of("""\
            name: wf
            inputs:
              a: strng
              b: {type: array, items: {type: 3}}
            nodes:
              n:
                llm: {prompt: "{{ inputs.a }} {{ inputs.b }}", output: {type: objekt}}
              f:
                first_of: [n]
                output: integr
            output: f
            """)
        assert [(p.field, p.line) for p in problems] == [
            ("inputs.a", 3),
            ("inputs.b", 4),
            ("output", 7),
            ("output", 10),
        ]
        assert "unknown type 'strng' (use one of string, integer" in problems[0].message
        assert "not a valid JSON Schema" in problems[1].message
        assert all("\n" not in p.message for p in problems)

    def test_a_bad_reference_in_output(self) -> None:
        (p,) = problems_of("""\
            name: wf
            nodes:
              a:
                llm: {prompt: hi}
            output: "a b"
            """)
        assert (p.field, p.line) == ("output", 5)
        assert "expected a reference like 'node.field'" in p.message

    def test_load_errors_name_the_path(self, tmp_path: Path) -> None:
        path = tmp_path / "broken.yaml"
        path.write_text("name: wf\nnodes: {}\noutput: nowhere\nextra: 1\n")
        with pytest.raises(fr.WorkflowDefinitionError) as info:
            fr.load(path)
        (p,) = info.value.problems
        assert (p.file, p.line) == (str(path), 4)
        assert str(info.value).startswith(f"{path}: 1 problem(s)")

    def test_a_missing_file_is_a_flowroute_error(self, tmp_path: Path) -> None:
        with pytest.raises(fr.FlowrouteError, match="cannot read workflow file"):
            fr.load(tmp_path / "nope.yaml")


# -- the file's JSON Schema ------------------------------------------------------------------


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = file_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def all_messages(errors: Iterator[jsonschema.ValidationError]) -> list[str]:
    """Error messages, including those of the branches of `anyOf` (optional sections)."""
    out: list[str] = []
    for e in errors:
        out.append(e.message)
        out += all_messages(iter(e.context or []))
    return out


class TestFileSchema:
    def test_is_a_draft_2020_12_schema_using_the_file_spelling(self) -> None:
        schema = file_schema()
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert "as" in schema["$defs"]["MapSpec"]["properties"]
        assert "in" in schema["$defs"]["WhenSpec"]["properties"]

    def test_accepts_the_example(self, validator: jsonschema.Draft202012Validator) -> None:
        data = yaml.safe_load(TRIAGE.read_text())
        assert list(validator.iter_errors(data)) == []

    @pytest.mark.parametrize(
        ("break_it", "expected"),
        [
            (lambda d: d["nodes"]["team"].update(retrys=1), "'retrys' was unexpected"),
            (lambda d: d.pop("output"), "'output' is a required property"),
            (lambda d: d["nodes"]["category"]["llm"].update(max_tokens="many"), "'many'"),
            (lambda d: d["nodes"]["policy"]["when"].pop("ref"), "'ref' is a required property"),
        ],
    )
    def test_rejects_a_broken_file(
        self, validator: jsonschema.Draft202012Validator, break_it: Any, expected: str
    ) -> None:
        data = yaml.safe_load(TRIAGE.read_text())
        break_it(data)
        messages = all_messages(validator.iter_errors(data))
        assert any(expected in m for m in messages), messages


# -- map, when, first_of ---------------------------------------------------------------------


class TestMap:
    def test_llm_over_a_list_input(self) -> None:
        wf = loads("""\
            name: wf
            inputs:
              items: {type: array, items: {type: string}}
              tone: string
            models:
              m: local
            nodes:
              each:
                map: {over: inputs.items, as: item}
                llm:
                  model: m
                  prompt: "{{ inputs.tone }}: {{ item }}"
            output: each
            """)
        assert wf.check() == []
        node = wf.nodes["each"]
        assert isinstance(node, MapNode)
        assert node.inputs["inputs.tone"] == Ref(INPUTS, ("tone",))

        model = FunctionModel(lambda r: r.as_prompt().upper())
        result = dataclasses.replace(wf, models={"m": model}).run(items=["a", "b", "c"], tone="hey")
        assert result.output == ["HEY: A", "HEY: B", "HEY: C"]
        assert sorted(r.prompt or "" for r in model.requests) == ["hey: a", "hey: b", "hey: c"]
        assert len(result.records["each"].calls) == 3

    def test_declared_model_names_map_to_model_objects(self) -> None:
        wf = loads("""\
            name: wf
            inputs: {text: string}
            nodes:
              a:
                llm: {model: scripted, prompt: "{{ inputs.text }}"}
            output: a
            """)
        assert any("unknown model" in p.message for p in wf.check())
        wf = dataclasses.replace(wf, models={"scripted": TestModel(["hi there"])})
        assert wf.check() == []
        assert wf.run(text="x").output == "hi there"

    def test_tool_over_a_node_output_respects_concurrency(self, tools_dir: Path) -> None:
        wf = loads(
            TOOLS_HEADER
            + """\
nodes:
  words:
    tool: split
    args: {text: "{{ inputs.text }}"}
  lengths:
    map: {over: words, as: word, concurrency: 2}
    tool: slow_len
    args: {word: "{{ word }}"}
output: lengths
""",
            tools_dir,
        )
        flight = sys.modules[TOOLS_MODULE].flight
        flight.update(now=0, max=0, calls=0)

        result = wf.run(text="a bb ccc dddd eeeee")

        assert result.output == [1, 2, 3, 4, 5]
        assert flight["calls"] == 5
        assert flight["max"] == 2

    def test_a_map_over_a_tool_needs_the_item_as_an_argument(self, tools_dir: Path) -> None:
        (p,) = problems_of(
            TOOLS_HEADER
            + """\
nodes:
  a:
    map: {over: inputs.text, as: word}
    tool: upper
    args: {text: fixed}
output: a
""",
            tools_dir,
        )
        assert where(p) == ("wf.yaml", "a", "args", 13)
        assert "needs one argument set to '{{ word }}'" in p.message

    def test_mapping_over_a_non_list_is_a_type_error(self, tools_dir: Path) -> None:
        wf = loads(
            TOOLS_HEADER
            + """\
nodes:
  a:
    map: {over: inputs.text, as: word}
    tool: upper
    args: {text: "{{ word }}"}
output: a
""",
            tools_dir,
        )
        (p,) = wf.check()
        assert (p.severity, p.node, p.line) == ("error", "a", 11)
        assert "'inputs.text' produces string but array of string is expected" in p.message


class TestWhenAndFirstOf:
    WORKFLOW = f"""\
name: wf
inputs:
  kind: string
  level: integer
tools:
  upper: {TOOLS_MODULE}:upper
  count: {TOOLS_MODULE}:count
nodes:
  loud:
    tool: upper
    when: {{ref: inputs.kind, equals: shout}}
    args: {{text: "{{{{ inputs.kind }}}}"}}
  quiet:
    tool: upper
    when: {{ref: inputs.kind, in: [whisper, mumble]}}
    args: {{text: "..."}}
  bumped:
    tool: count
    when: {{ref: inputs.level, equals: 3}}
    args: {{n: "{{{{ inputs.level }}}}"}}
  answer:
    first_of: [loud, quiet]
    output: string
output:
  answer: answer
"""

    @pytest.mark.parametrize(
        ("kind", "ran", "skipped", "answer"),
        [
            ("shout", "loud", "quiet", "SHOUT"),
            ("whisper", "quiet", "loud", "..."),
            ("mumble", "quiet", "loud", "..."),
        ],
    )
    def test_equals_and_in_choose_the_branch(
        self, tools_dir: Path, kind: str, ran: str, skipped: str, answer: str
    ) -> None:
        wf = loads(self.WORKFLOW, tools_dir)
        assert [p for p in wf.check() if p.severity == "error"] == []
        result = wf.run(kind=kind, level=1)
        assert result.output == {"answer": answer}
        assert result.records[ran].status == "succeeded"
        assert result.records[skipped].status == "skipped"
        assert result.records["answer"].status == "succeeded"

    def test_equals_compares_typed_values(self, tools_dir: Path) -> None:
        wf = loads(self.WORKFLOW, tools_dir)
        assert wf.run(kind="shout", level=3).records["bumped"].output == 4
        assert wf.run(kind="shout", level=4).records["bumped"].status == "skipped"

    def test_when_no_branch_runs_the_fan_in_is_skipped_and_the_run_fails(
        self, tools_dir: Path
    ) -> None:
        result = loads(self.WORKFLOW, tools_dir).run(kind="sing", level=0)
        assert not result.ok
        assert result.records["answer"].status == "skipped"
        assert "answer" in (result.error or "")

    def test_when_needs_equals_or_in(self) -> None:
        (p,) = problems_of("""\
            name: wf
            inputs: {kind: string}
            nodes:
              a:
                llm: {prompt: hi}
                when: {ref: inputs.kind}
            output: a
            """)
        assert (p.node, p.field, p.line) == ("a", "when", 6)
        assert "give 'equals' or 'in'" in p.message
