"""The litellm backend without a network: request building, parsing, repair, costs, checks.

Calls go to a fake `litellm.acompletion` returning real `litellm.ModelResponse` objects.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from typing import Any, Literal

import anyio
import pytest
from pydantic import BaseModel

import flowroute
from flowroute.errors import ModelError, OutputValidationError
from flowroute.models.base import ModelRequest, ModelResponse, Settings
from flowroute.models.litellm_model import (
    NO_KEY,
    LiteLLMModel,
    OutputFormat,
    OutputRepairError,
    completion_cost,
    extract_logprobs,
    sampling_params,
    tighten_schema,
    with_instruction,
)
from flowroute.structured.constraint import OutputConstraint


class City(BaseModel):
    city: str
    population: int


class Trip(BaseModel):
    origin: City
    stops: list[City] = []


def of(tp: Any) -> OutputConstraint:
    constraint = OutputConstraint.of(tp)
    assert constraint is not None
    return constraint


CHOICE = of(Literal["refund", "question"])
CITY = of(City)


@pytest.fixture(scope="module")
def litellm() -> Any:
    if importlib.util.find_spec("litellm") is None:
        pytest.skip("litellm is not installed")
    from flowroute.models.litellm_model import _import_litellm  # imports it without network access

    return _import_litellm()


def reply(
    litellm: Any,
    content: str,
    *,
    model: str = "gemma",
    prompt_tokens: int = 20,
    completion_tokens: int = 5,
    finish: str = "stop",
) -> Any:
    return litellm.ModelResponse(
        model=model,
        choices=[
            {
                "index": 0,
                "finish_reason": finish,
                "message": {"role": "assistant", "content": content},
            }
        ],
        usage={
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    )


class FakeServer:
    """Stands in for `litellm.acompletion`: records calls, answers from a script."""

    def __init__(self, litellm: Any, answers: list[Any], model: str = "gemma") -> None:
        self.litellm = litellm
        self.answers = list(answers)
        self.model = model
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return reply(self.litellm, answer, model=self.model)


def run(model: LiteLLMModel, request: ModelRequest) -> ModelResponse:
    async def go() -> ModelResponse:
        return await model.generate(request)

    return anyio.run(go)


class StatusError(Exception):
    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


# -- check() -----------------------------------------------------------------------------------


def test_check_reports_a_missing_api_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLOWROUTE_TEST_KEY", raising=False)
    model = LiteLLMModel("openai/gpt-4o-mini", api_key_env="FLOWROUTE_TEST_KEY")
    problems = model.check()
    assert problems == [
        "environment variable FLOWROUTE_TEST_KEY (API key for model 'openai/gpt-4o-mini') "
        "is not set"
    ]
    monkeypatch.setenv("FLOWROUTE_TEST_KEY", "sk-test")
    assert model.check() == []


def test_check_reports_missing_provider_keys(litellm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    problems = LiteLLMModel("anthropic/claude-3-5-haiku-20241022").check()
    assert len(problems) == 1 and "ANTHROPIC_API_KEY" in problems[0]
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    assert LiteLLMModel("anthropic/claude-3-5-haiku-20241022").check() == []


def test_check_needs_no_key_for_an_api_base_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert LiteLLMModel("openai/gemma", api_base="http://127.0.0.1:8080/v1").check() == []
    problems = LiteLLMModel("gemma", api_base="http://127.0.0.1:8080/v1").check()
    assert problems and "openai/gemma" in problems[0]


def test_registry_check_goes_through_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from flowroute.models.registry import check_model_ref

    monkeypatch.delenv("FLOWROUTE_TEST_KEY", raising=False)
    model = flowroute.models.litellm("openai/gpt-4o-mini", api_key_env="FLOWROUTE_TEST_KEY")
    assert "FLOWROUTE_TEST_KEY" in check_model_ref(model)[0]


def test_bad_options_are_rejected() -> None:
    with pytest.raises(ModelError, match="structured"):
        LiteLLMModel("openai/x", structured="grammar")  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="repair_retries"):
        LiteLLMModel("openai/x", repair_retries=-1)


# -- costs -------------------------------------------------------------------------------------


def test_cost_is_none_for_an_unpriced_model(litellm: Any) -> None:
    assert completion_cost(litellm, reply(litellm, "hi", model="gemma")) is None
    assert completion_cost(litellm, reply(litellm, "hi", model="my-local-llama-70b")) is None


def test_cost_comes_from_the_price_table_for_a_priced_model(litellm: Any) -> None:
    cost = completion_cost(litellm, reply(litellm, "hi", model="gpt-4o-mini"))
    assert cost is not None and cost > 0


def test_costs_and_tokens_are_summed_over_repairs(
    litellm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeServer(litellm, ['{"value": "maybe"}', '{"value": "refund"}'], model="gpt-4o-mini")
    monkeypatch.setattr(litellm, "acompletion", fake)
    model = LiteLLMModel(
        "openai/gpt-4o-mini", api_key_env="FLOWROUTE_TEST_KEY", structured="json_schema"
    )
    monkeypatch.setenv("FLOWROUTE_TEST_KEY", "sk-test")
    response = run(model, ModelRequest(prompt="Ticket: money back\nKind:", constraint=CHOICE))
    one = completion_cost(litellm, reply(litellm, "x", model="gpt-4o-mini"))
    assert one is not None
    assert response.cost == pytest.approx(2 * one)
    assert (response.prompt_tokens, response.completion_tokens) == (40, 10)
    assert fake.calls[0]["api_key"] == "sk-test"


# -- request building --------------------------------------------------------------------------


def test_choice_is_sent_as_a_wrapped_enum() -> None:
    fmt = OutputFormat.build(CHOICE, "json_schema")
    assert fmt.wrapped and fmt.strict
    assert fmt.response_format() == {
        "type": "json_schema",
        "json_schema": {
            "name": "output",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {"value": {"type": "string", "enum": ["refund", "question"]}},
                "required": ["value"],
                "additionalProperties": False,
            },
        },
    }
    assert fmt.instruction() is None
    assert fmt.parse('{"value": "refund"}') == "refund"
    assert fmt.parse('```json\n{"value": "question"}\n```') == "question"
    with pytest.raises(OutputValidationError, match="not one of"):
        fmt.parse('{"value": "maybe"}')
    with pytest.raises(OutputValidationError, match='"value" field'):
        fmt.parse('"refund"')
    with pytest.raises(OutputValidationError, match="not valid JSON"):
        fmt.parse("refund")


def test_regex_is_sent_as_an_anchored_pattern() -> None:
    fmt = OutputFormat.build(
        OutputConstraint.regex(r"[A-Z]{3}|\d{4}"), "json_object", send_schema_key=True
    )
    rf = fmt.response_format()
    assert rf is not None and rf["type"] == "json_object"
    assert rf["schema"]["properties"]["value"] == {
        "type": "string",
        "pattern": r"^([A-Z]{3}|\d{4})$",
    }
    assert fmt.parse('{"value": "1234"}') == "1234"
    with pytest.raises(OutputValidationError):
        fmt.parse('{"value": "12345"}')


def test_object_schema_is_tightened_not_wrapped() -> None:
    fmt = OutputFormat.build(of(Trip), "json_schema")
    assert not fmt.wrapped and fmt.strict
    assert fmt.schema is not None
    assert fmt.schema["required"] == ["origin", "stops"]
    assert fmt.schema["additionalProperties"] is False
    assert fmt.schema["$defs"]["City"]["additionalProperties"] is False
    assert "default" not in fmt.schema["properties"]["stops"]
    assert "default" in of(Trip).schema["properties"]["stops"]
    # the constraint's own schema is left alone
    assert of(Trip).schema["required"] == ["origin"]
    value = fmt.parse('{"origin": {"city": "Oslo", "population": 700000}, "stops": []}')
    assert isinstance(value, Trip)


def test_non_object_json_is_wrapped_with_defs_at_the_root() -> None:
    fmt = OutputFormat.build(of(list[City]), "json_schema")
    assert fmt.wrapped and fmt.schema is not None
    assert "$defs" in fmt.schema and "$defs" not in fmt.schema["properties"]["value"]
    value = fmt.parse('{"value": [{"city": "Oslo", "population": 1}]}')
    assert [c.city for c in value] == ["Oslo"]


def test_free_dicts_are_not_strict() -> None:
    schema: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "integer"}}
    assert tighten_schema(schema) is False
    fmt = OutputFormat.build(OutputConstraint.json_schema(schema), "json_schema")
    rf = fmt.response_format()
    assert rf is not None and rf["json_schema"]["strict"] is False


def test_json_object_mode_describes_the_schema_and_sends_it_only_to_servers() -> None:
    hosted = OutputFormat.build(CITY, "json_object")
    assert hosted.response_format() == {"type": "json_object"}
    instruction = hosted.instruction()
    assert instruction is not None
    assert "JSON Schema" in instruction and '"population"' in instruction
    server = OutputFormat.build(CITY, "json_object", send_schema_key=True)
    rf = server.response_format()
    assert rf is not None and rf["schema"]["properties"]["population"] == {
        "title": "Population",
        "type": "integer",
    }


def test_none_mode_asks_for_the_bare_answer() -> None:
    fmt = OutputFormat.build(CHOICE, "none")
    assert fmt.response_format() is None
    assert fmt.instruction() == "Answer with exactly one of: refund, question"
    assert fmt.parse(" refund\n") == "refund"


def test_instruction_goes_to_the_last_user_message() -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    out = with_instruction(messages, "Answer in JSON.")
    assert out[-1] == {"role": "user", "content": "Hi\n\nAnswer in JSON."}
    assert messages[-1]["content"] == "Hi"  # not mutated
    assert with_instruction(messages, None) == messages


def test_sampling_params_leave_defaults_out() -> None:
    assert sampling_params(ModelRequest(prompt="x")) == {
        "max_tokens": 256,
        "temperature": 0.0,
        "seed": 0,
    }
    settings = Settings(
        max_tokens=5, temperature=0.7, top_p=0.9, seed=None, stop=("\n",), logprobs=True
    )
    assert sampling_params(ModelRequest(prompt="x", settings=settings)) == {
        "max_tokens": 5,
        "temperature": 0.7,
        "top_p": 0.9,
        "stop": ["\n"],
        "logprobs": True,
        "top_logprobs": 1,
    }


def test_call_kwargs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-must-not-leak")
    server = LiteLLMModel("openai/gemma", api_base="http://h/v1", timeout=5, extra={"seed": 7})
    kwargs = server.call_kwargs(ModelRequest(prompt="x"))
    assert kwargs["api_base"] == "http://h/v1" and kwargs["api_key"] == NO_KEY
    assert kwargs["timeout"] == 5 and kwargs["seed"] == 7 and kwargs["model"] == "openai/gemma"
    hosted = LiteLLMModel("openai/gpt-4o-mini").call_kwargs(ModelRequest(prompt="x"))
    assert "api_key" not in hosted and "api_base" not in hosted


def test_logprobs_are_extracted_when_returned() -> None:
    tokens = [{"token": "a", "logprob": -0.5}, {"token": "b", "logprob": 0}]
    choice = {"logprobs": {"content": tokens}}
    assert extract_logprobs(choice) == [-0.5, 0.0]
    assert extract_logprobs({"logprobs": {"content": []}}) is None
    assert extract_logprobs({"logprobs": None}) is None


# -- generate() with a fake acompletion --------------------------------------------------------


def test_repair_sends_the_bad_answer_and_its_errors(
    litellm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeServer(litellm, ['{"city": "Paris"}', '{"city": "Paris", "population": 2100000}'])
    monkeypatch.setattr(litellm, "acompletion", fake)
    model = LiteLLMModel("openai/gemma", api_base="http://h/v1", structured="json_object")
    response = run(model, ModelRequest(prompt="Largest French city?", constraint=CITY))
    assert response.value == City(city="Paris", population=2100000)
    assert response.attempts == 2
    assert response.cost is None
    first, second = fake.calls
    assert first["response_format"]["type"] == "json_object"
    assert "JSON Schema" in first["messages"][-1]["content"]
    assert second["messages"][:-2] == first["messages"]
    assert second["messages"][-2] == {"role": "assistant", "content": '{"city": "Paris"}'}
    assert "population" in second["messages"][-1]["content"]
    assert "invalid" in second["messages"][-1]["content"]


def test_repairs_are_bounded(litellm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeServer(litellm, ["nope"] * 5)
    monkeypatch.setattr(litellm, "acompletion", fake)
    model = LiteLLMModel(
        "openai/gemma", api_base="http://h/v1", structured="none", repair_retries=1
    )
    with pytest.raises(OutputRepairError) as info:
        run(model, ModelRequest(prompt="Kind?", constraint=CHOICE))
    assert len(fake.calls) == 2 and info.value.attempts == 2
    assert info.value.raw_text == "nope"
    assert info.value.validation_errors == ["'nope' is not one of ['refund', 'question']"]
    assert "response_format" not in fake.calls[0]


def test_auto_falls_back_to_json_object_when_json_schema_is_refused(
    litellm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    refusal = StatusError(
        500, "Input should be 'text' or 'json_object' ('body', 'response_format', 'type')"
    )
    fake = FakeServer(litellm, [refusal, '{"value": "refund"}', '{"value": "question"}'])
    monkeypatch.setattr(litellm, "acompletion", fake)
    model = LiteLLMModel("openai/gemma", api_base="http://h/v1")
    assert run(model, ModelRequest(prompt="Kind?", constraint=CHOICE)).value == "refund"
    probe, fallback = fake.calls
    assert probe["response_format"]["type"] == "json_schema" and probe["max_retries"] == 0
    assert fallback["response_format"]["type"] == "json_object"
    assert fallback["response_format"]["schema"]["properties"]["value"]["enum"] == [
        "refund",
        "question",
    ]
    assert "max_retries" not in fallback
    # remembered: no second probe
    assert run(model, ModelRequest(prompt="Kind?", constraint=CHOICE)).value == "question"
    assert fake.calls[2]["response_format"]["type"] == "json_object"


def test_accepted_json_schema_is_not_probed_again(
    litellm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeServer(litellm, ['{"value": "refund"}', '{"value": "refund"}'])
    monkeypatch.setattr(litellm, "acompletion", fake)
    model = LiteLLMModel("openai/gemma", api_base="http://h/v1")
    run(model, ModelRequest(prompt="Kind?", constraint=CHOICE))
    run(model, ModelRequest(prompt="Kind?", constraint=CHOICE))
    assert fake.calls[0]["max_retries"] == 0 and "max_retries" not in fake.calls[1]
    assert fake.calls[1]["response_format"]["type"] == "json_schema"
    assert "JSON Schema" not in fake.calls[1]["messages"][-1]["content"]


def test_other_probe_failures_are_retried_normally_then_reported(
    litellm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeServer(litellm, [StatusError(503, "busy"), StatusError(503, "still busy")])
    monkeypatch.setattr(litellm, "acompletion", fake)
    model = LiteLLMModel("openai/gemma", api_base="http://h/v1")
    with pytest.raises(ModelError) as info:
        run(model, ModelRequest(prompt="Kind?", constraint=CHOICE))
    assert len(fake.calls) == 2
    assert "openai/gemma" in str(info.value) and "http://h/v1" in str(info.value)
    assert "still busy" in str(info.value)


def test_forced_json_schema_refusal_is_an_error(
    litellm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeServer(litellm, [StatusError(400, "response_format json_schema not supported")])
    monkeypatch.setattr(litellm, "acompletion", fake)
    model = LiteLLMModel("openai/gemma", api_base="http://h/v1", structured="json_schema")
    with pytest.raises(ModelError, match="not supported"):
        run(model, ModelRequest(prompt="Kind?", constraint=CHOICE))


def test_free_text_request(litellm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeServer(litellm, ["Rome"])
    monkeypatch.setattr(litellm, "acompletion", fake)
    model = LiteLLMModel("openai/gemma", api_base="http://h/v1")
    response = run(
        model,
        ModelRequest(
            messages=(
                {"role": "system", "content": "Short."},
                {"role": "user", "content": "Italy?"},
            ),
            settings=Settings(max_tokens=3),
        ),
    )
    assert (response.text, response.value, response.attempts) == ("Rome", "Rome", 1)
    assert (response.prompt_tokens, response.completion_tokens) == (20, 5)
    assert response.logprobs is None and response.constrained is False
    call = fake.calls[0]
    assert "response_format" not in call
    assert call["messages"] == [
        {"role": "system", "content": "Short."},
        {"role": "user", "content": "Italy?"},
    ]
    assert call["max_tokens"] == 3


def test_missing_key_fails_before_calling(litellm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeServer(litellm, [])
    monkeypatch.setattr(litellm, "acompletion", fake)
    monkeypatch.delenv("FLOWROUTE_TEST_KEY", raising=False)
    model = LiteLLMModel("openai/gpt-4o-mini", api_key_env="FLOWROUTE_TEST_KEY")
    with pytest.raises(ModelError, match="FLOWROUTE_TEST_KEY"):
        run(model, ModelRequest(prompt="x"))
    assert fake.calls == []


# -- packaging ---------------------------------------------------------------------------------


def test_factory_still_works_after_the_module_is_imported() -> None:
    import flowroute.models.litellm_model  # must not shadow the factory

    model = flowroute.models.litellm("openai/gemma", api_base="http://h/v1", repair_retries=1)
    assert isinstance(model, LiteLLMModel) and model.repair_retries == 1


def test_importing_flowroute_does_not_import_litellm() -> None:
    code = (
        "import sys, flowroute, flowroute.models.litellm_model\n"
        "from flowroute.models.registry import resolve_model\n"
        "resolve_model('openai/gpt-4o-mini')\n"
        "print('litellm' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().lower()) is False
