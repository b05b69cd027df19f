"""The guarded router, with the real packaged embedding model."""

from __future__ import annotations

from typing import Any

import pytest

import flowroute as fr
from flowroute.models.testing import FunctionModel
from flowroute.routing.router import RouterNode, routes_from

ROUTES = {
    "billing": [
        "I was charged twice for my subscription",
        "Can I get a refund for last month's invoice?",
        "Why is there an extra fee on my bill?",
        "Update the credit card used for payments",
        "My payment failed but money left my account",
    ],
    "tech": [
        "The app crashes when I open settings",
        "I can't log in, the password reset email never arrives",
        "The page shows an error 500",
        "Sync between my phone and laptop stopped working",
        "The export button does nothing",
    ],
}
OFF_DOMAIN = [
    "What's a good recipe for banana bread?",
    "Who won the football match yesterday?",
    "Write me a poem about the sea",
    "How tall is Mount Everest?",
]


def test_routes_in_domain_inputs_and_rejects_the_rest() -> None:
    node = RouterNode(
        name="r", inputs={}, routes=routes_from(ROUTES), reject_examples=tuple(OFF_DOMAIN)
    )
    assert node.classify("I think I was billed two times this month").route == "billing"
    assert node.classify("the application freezes on startup").route == "tech"
    rejected = node.classify("Recommend a movie for tonight")
    assert rejected.route == "reject"
    assert max(rejected.scores.values()) < rejected.threshold
    assert node.classify("la cuenta del restaurante").route in ("reject", "billing")


def build(fallback: Any = None, **kw: Any) -> tuple[fr.Workflow[Any], list[str]]:
    ran: list[str] = []

    @fr.tool
    def refund(text: str) -> str:
        """Billing desk."""
        ran.append("billing")
        return "billing desk"

    @fr.tool
    def support(text: str) -> str:
        """Tech desk."""
        ran.append("tech")
        return "tech desk"

    @fr.workflow
    def desk(message: str) -> Any:
        where = fr.route(message, ROUTES, reject_examples=OFF_DOMAIN, fallback=fallback, **kw)
        with fr.when(where, "billing"):
            a = refund(message)
        with fr.when(where, "tech"):
            b = support(message)
        return fr.first_of(a, b)

    return desk, ran


def test_only_the_chosen_branch_runs() -> None:
    wf, ran = build()
    result = wf.run(message="please refund the double charge")
    assert result.output == "billing desk"
    assert ran == ["billing"]
    assert result.records["support"].status == "skipped"
    [decision] = result.records["route"].trace
    assert decision["route"] == "billing" and decision["by"] == "embedding"
    assert set(decision["scores"]) == {"billing", "tech"}

    result = wf.run(message="What's the capital of Australia?")
    assert result.records["route"].output == "reject"
    assert result.records["refund"].status == "skipped"
    assert result.records["support"].status == "skipped"


def test_low_margin_inputs_go_to_the_llm_fallback() -> None:
    asked: list[str] = []

    def classifier(request: fr.ModelRequest) -> str:
        asked.append(request.as_prompt())
        return "tech"

    wf, _ = build(fallback=FunctionModel(classifier, name="clf"), margin=1.0)  # always unsure
    result = wf.run(message="my invoice page crashes")
    assert result.output == "tech desk"
    decision = result.records["route"].trace[0]
    assert decision["by"] == "llm" and decision["route"] == "tech"
    assert "Categories:" in asked[0] and "- reject:" in asked[0]


def test_router_problems_are_named() -> None:
    with pytest.raises(fr.WorkflowDefinitionError, match="route 'empty' has no examples"):

        @fr.workflow
        def wf(message: str) -> Any:
            return fr.route(message, {"empty": [], "ok": ["hello"]})

        wf.validate()
    with pytest.raises(fr.WorkflowDefinitionError, match="'reject' is also a route"):

        @fr.workflow
        def wf2(message: str) -> Any:
            return fr.route(message, {"reject": ["x"], "ok": ["hello"]})

        wf2.validate()


def test_a_yaml_router_branches(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import textwrap

    (tmp_path / "desk_tools.py").write_text(
        "def billing(text: str) -> str:\n    return 'billing desk'\n\n"
        "def tech(text: str) -> str:\n    return 'tech desk'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    source = textwrap.dedent("""\
        name: desk
        inputs: {message: string}
        tools:
          billing: desk_tools:billing
          tech: desk_tools:tech
        nodes:
          where:
            router:
              input: inputs.message
              routes:
                billing: ["I was charged twice", "Can I get a refund?", "Extra fee on my bill"]
                tech:
                  description: problems with the app
                  examples: ["The app crashes", "I can't log in", "The page shows an error"]
              reject_examples: ["A recipe for banana bread", "Write me a poem"]
          to_billing:
            tool: billing
            args: {text: "{{ inputs.message }}"}
            when: {ref: where, equals: billing}
          to_tech:
            tool: tech
            args: {text: "{{ inputs.message }}"}
            when: {ref: where, equals: tech}
        output: where
        """)
    wf = fr.loads(source, source="desk.yaml")
    result = wf.run(message="the app keeps crashing on my phone")
    assert result.output == "tech"
    assert result.records["to_tech"].output == "tech desk"
    assert result.records["to_billing"].status == "skipped"
    bad = source.replace("input: inputs.message", "input: inputs.nope")
    problems = [p for p in fr.loads(bad, source="desk.yaml").check() if p.severity == "error"]
    assert any("nope" in p.message and p.line == 9 and p.node == "where" for p in problems)
