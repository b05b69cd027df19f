"""The embedded local model (Gemma 3 270M via llama.cpp): constraints are really applied."""

from __future__ import annotations

import json
import re
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import flowroute as fr
from flowroute.models.base import ModelRequest, Settings
from flowroute.models.llamacpp import LocalModel
from flowroute.structured.constraint import OutputConstraint

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model() -> LocalModel:
    m = LocalModel()
    m.warm_up()
    return m


def generate(
    model: LocalModel, prompt: str, constraint: OutputConstraint | None, **kw: Any
) -> fr.ModelResponse:
    import anyio

    request = ModelRequest(prompt=prompt, constraint=constraint, settings=Settings(**kw))
    return anyio.run(model.generate, request)


def test_constraint_forces_output_the_model_would_never_produce(model: LocalModel) -> None:
    prompt = "The capital of France is"
    free = generate(model, prompt, None, max_tokens=12)
    pattern = r"ZQ-[0-9]{3}-XK"
    assert re.fullmatch(pattern, free.text) is None
    assert not free.constrained
    forced = generate(model, prompt, OutputConstraint.regex(pattern), max_tokens=16)
    assert re.fullmatch(pattern, forced.text), forced.text
    assert forced.constrained


class City(BaseModel):
    name: str
    country: str
    population_millions: float
    """Unbounded list: the constraint bounds it (DEFAULT_MAX_ITEMS) so decoding terminates."""
    landmarks: list[str]


def test_pydantic_object_with_nested_array(model: LocalModel) -> None:
    prompt = "Paris, France: 2.1 million people; Eiffel Tower, Louvre.\nJSON: "
    response = generate(model, prompt, OutputConstraint.of(City), max_tokens=200)
    assert isinstance(response.value, City)
    assert response.constrained
    assert response.completion_tokens > 0 and response.prompt_tokens > 0


def test_choice_and_logprobs(model: LocalModel) -> None:
    c = OutputConstraint.of(Literal["positive", "negative"])
    response = generate(
        model,
        "Review: I loved it, wonderful film!\nSentiment (positive or negative):",
        c,
        max_tokens=4,
        logprobs=True,
    )
    assert response.value in ("positive", "negative")
    assert response.logprobs is not None
    assert len(response.logprobs) == response.completion_tokens
    assert all(lp <= 0.0 for lp in response.logprobs)


def test_truncated_output_is_a_clear_error(model: LocalModel) -> None:
    schema = {
        "type": "object",
        "properties": {"text": {"type": "string", "minLength": 40}},
        "required": ["text"],
    }
    with pytest.raises(fr.ModelError) as info:
        generate(model, "A long story:", OutputConstraint.json_schema(schema), max_tokens=5)
    assert "max_tokens=5" in str(info.value)
    assert info.value.raw_text is not None and info.value.model == "local"


def test_missing_gguf_is_reported_before_running() -> None:
    assert LocalModel("/no/such/model.gguf").check() == ["GGUF file not found: /no/such/model.gguf"]


# -- property: any generated schema yields output that validates -------------------------------

_leaf = st.one_of(
    st.just({"type": "string", "maxLength": 12}),
    st.just({"type": "integer", "minimum": 0, "maximum": 99}),
    st.just({"type": "boolean"}),
    st.lists(
        st.sampled_from(["red", "green", "blue", "amber", "violet"]),
        min_size=2,
        max_size=4,
        unique=True,
    ).map(lambda vs: {"type": "string", "enum": vs}),
    st.sampled_from([r"[A-Z]{2}[0-9]{2}", r"(yes|no)", r"[a-z]{3,6}"]).map(
        lambda p: {"type": "string", "pattern": f"^{p}$"}
    ),
)

_names = st.sampled_from(["id", "name", "color", "size", "code", "ok", "tags", "owner", "count"])


def _object(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(_names, children, min_size=1, max_size=3).map(
        lambda props: {
            "type": "object",
            "properties": props,
            "required": sorted(props),
            "additionalProperties": False,
        }
    )


_schemas = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        _object(inner),
        inner.map(lambda s: {"type": "array", "items": s, "minItems": 1, "maxItems": 2}),
    ),
    max_leaves=3,
).filter(lambda s: s.get("type") in ("object", "array"))


@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,  # the same schemas every run: CI time stays predictable
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(schema=_schemas)
def test_generated_schemas_always_validate(model: LocalModel, schema: dict[str, Any]) -> None:
    import jsonschema

    constraint = OutputConstraint.json_schema(schema)
    response = generate(model, "Here is a JSON example:\n", constraint, max_tokens=160)
    assert response.constrained
    jsonschema.validate(json.loads(response.text), schema)


def test_workflow_on_the_local_model_records_the_constraint() -> None:
    @fr.llm(model="local", output=Literal["refund", "bug", "question"], settings={"max_tokens": 4})
    def classify(ticket: str) -> str:
        """Ticket: I was charged twice, refund me.
        Category: refund

        Ticket: The app crashes on start.
        Category: bug

        Ticket: {{ ticket }}
        Category:"""

    @fr.workflow
    def triage(ticket: str) -> str:
        return classify(ticket)

    result = triage.run(ticket="How do I reset my password?")
    assert result.output in ("refund", "bug", "question")
    record = result.records["classify"]
    assert record.model == "local"
    assert record.calls and record.calls[0].constrained


def test_timeout_stops_local_generation_and_the_model_stays_usable(model: LocalModel) -> None:
    import time

    @fr.llm(model=model, settings={"max_tokens": 400}, timeout=0.5)
    def ramble(topic: str) -> str:
        "A very long essay about {{ topic }}:"

    @fr.workflow
    def wf(topic: str) -> str:
        return ramble(topic)

    start = time.perf_counter()
    result = wf.run(topic="rivers")
    elapsed = time.perf_counter() - start
    assert result.records["ramble"].status == "failed"
    assert "timed out after 0.5s" in (result.records["ramble"].error or "")
    assert elapsed < 3, "400 tokens take ~10 s: decoding must stop at the timeout"
    again = generate(model, "The capital of France is", None, max_tokens=3)
    assert again.completion_tokens > 0
