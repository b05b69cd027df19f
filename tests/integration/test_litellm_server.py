"""The litellm backend against a real llama.cpp OpenAI-compatible server (no HTTP mocks).

The server runs the embedded Gemma 3 270M, a base model: prompts are few-shot, outputs are
short, and structure comes from the server's grammar, not from the model's good manners.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import anyio
import pytest
from pydantic import BaseModel

import flowroute
from flowroute.errors import ModelError
from flowroute.models.base import ModelRequest, ModelResponse, Settings
from flowroute.models.litellm_model import LiteLLMModel, OutputRepairError
from flowroute.structured.constraint import OutputConstraint

if TYPE_CHECKING:
    from conftest import LlamaServer  # tests/integration/conftest.py

pytestmark = pytest.mark.integration

MODEL = "openai/gemma-3-270m"


class City(BaseModel):
    city: str
    population: int


def generate(model: LiteLLMModel, request: ModelRequest) -> ModelResponse:
    async def go() -> ModelResponse:
        return await model.generate(request)

    return anyio.run(go)


def model_for(server: LlamaServer, **options: Any) -> LiteLLMModel:
    return LiteLLMModel(MODEL, api_base=server.base_url, **options)


def test_plain_completion_returns_text_and_token_counts(llama_server: LlamaServer) -> None:
    model = model_for(llama_server)
    response = generate(
        model,
        ModelRequest(
            prompt=(
                "Q: What is the capital of France?\nA: Paris\n\n"
                "Q: What is the capital of Italy?\nA:"
            ),
            settings=Settings(max_tokens=8),
        ),
    )
    assert isinstance(response.text, str) and response.text.strip()
    assert response.value == response.text
    assert response.prompt_tokens > 10
    assert 0 < response.completion_tokens <= 8
    assert response.attempts == 1
    assert response.finish_reason in ("stop", "length")
    assert response.model == MODEL
    assert response.latency > 0


def test_schema_constrained_output_is_a_validated_object(llama_server: LlamaServer) -> None:
    model = model_for(llama_server)
    before = llama_server.chat_requests()
    response = generate(
        model,
        ModelRequest(
            prompt="The largest city of France and its population.",
            constraint=OutputConstraint.of(City),
            settings=Settings(max_tokens=40),
        ),
    )
    assert isinstance(response.value, City)
    assert isinstance(response.value.population, int)
    assert response.value.city
    # Valid on the first completion: the server enforced the schema as a grammar.
    assert response.attempts == 1
    # llama-cpp-python's server refuses OpenAI's json_schema format (one rejected request),
    # so "auto" fell back to json_object + schema, which it compiles to a grammar.
    assert model.structured_mode() == "json_object"
    assert llama_server.chat_requests() - before == 2


def test_server_rejects_openai_json_schema_format(llama_server: LlamaServer) -> None:
    """Evidence for the fallback: forcing json_schema fails at the server, not in flowroute."""
    model = model_for(llama_server, structured="json_schema", extra={"max_retries": 0})
    with pytest.raises(ModelError) as info:
        generate(
            model,
            ModelRequest(
                prompt="A city.",
                constraint=OutputConstraint.of(City),
                settings=Settings(max_tokens=8),
            ),
        )
    assert "response_format" in str(info.value)
    assert MODEL in str(info.value)


def test_forced_json_object_mode_is_enforced_by_the_server(llama_server: LlamaServer) -> None:
    class Odd(BaseModel):
        zq_code: int
        flag_xy: bool

    model = model_for(llama_server, structured="json_object", repair_retries=0)
    response = generate(
        model,
        ModelRequest(
            prompt="Hello there.",
            constraint=OutputConstraint.of(Odd),
            settings=Settings(max_tokens=30),
        ),
    )
    assert isinstance(response.value, Odd)
    assert response.attempts == 1


def test_choice_output(llama_server: LlamaServer) -> None:
    model = model_for(llama_server)
    response = generate(
        model,
        ModelRequest(
            prompt=(
                "Review: I loved this film, it was wonderful!\nSentiment (positive or negative):"
            ),
            constraint=OutputConstraint.of(Literal["positive", "negative"]),
            settings=Settings(max_tokens=16),
        ),
    )
    assert response.value in ("positive", "negative")
    assert response.attempts == 1


def test_invalid_output_is_repaired_then_reported(llama_server: LlamaServer) -> None:
    # structured="none": nothing constrains decoding, and a base model will not produce this.
    model = model_for(llama_server, structured="none", repair_retries=2)
    before = llama_server.chat_requests()
    with pytest.raises(OutputRepairError) as info:
        generate(
            model,
            ModelRequest(
                prompt="Say hello.",
                constraint=OutputConstraint.regex(r"ZQX-\d{9}"),
                settings=Settings(max_tokens=10),
            ),
        )
    error = info.value
    assert isinstance(error, ModelError)
    assert error.attempts == 3
    assert llama_server.chat_requests() - before == 3
    assert error.raw_text is not None
    assert error.validation_errors and "does not match" in error.validation_errors[0]
    assert MODEL in str(error)


def test_cost_is_unknown_for_a_self_hosted_model(llama_server: LlamaServer) -> None:
    model = model_for(llama_server)
    response = generate(model, ModelRequest(prompt="Hi", settings=Settings(max_tokens=2)))
    assert response.cost is None


def test_logprobs_request_is_accepted(llama_server: LlamaServer) -> None:
    model = model_for(llama_server)
    response = generate(
        model, ModelRequest(prompt="Hi", settings=Settings(max_tokens=2, logprobs=True))
    )
    # llama-cpp-python's server only returns token logprobs when started with --logits_all.
    assert response.logprobs is None or len(response.logprobs) == response.completion_tokens


def test_connection_refused_is_a_model_error_naming_the_model(closed_api_base: str) -> None:
    api_base = closed_api_base
    model = LiteLLMModel(MODEL, api_base=api_base, extra={"max_retries": 0})
    with pytest.raises(ModelError) as info:
        generate(model, ModelRequest(prompt="Hi", settings=Settings(max_tokens=2)))
    message = str(info.value)
    assert MODEL in message
    assert api_base in message
    assert info.value.model == MODEL


def test_workflow_runs_through_the_server(llama_server: LlamaServer) -> None:
    model = flowroute.models.litellm("openai/gemma", api_base=llama_server.base_url)

    @flowroute.llm(model=model, output=City, settings={"max_tokens": 40})
    def describe_city(country: str) -> str:
        "The largest city of {{ country }} and its population."

    @flowroute.workflow
    def city_facts(country: str) -> City:
        return describe_city(country)

    assert [p for p in city_facts.check() if p.severity == "error"] == []
    result = city_facts.run(country="Japan")
    assert isinstance(result.output, City)
    record = result.records["describe_city"]
    assert record.status == "succeeded"
    assert record.model == "openai/gemma"
    assert len(record.calls) == 1
    assert record.calls[0].prompt_tokens > 0
    assert record.calls[0].cost is None
    assert result.cost is None
