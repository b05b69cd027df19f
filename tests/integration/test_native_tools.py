"""Native tool calling through litellm against a real llama.cpp server (chatml-function-calling)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import pytest

import flowroute as fr
from flowroute.models.base import ModelRequest, Settings
from flowroute.models.litellm_model import LiteLLMModel

if TYPE_CHECKING:
    from conftest import LlamaServer  # tests/integration/conftest.py

pytestmark = pytest.mark.integration

WEATHER = {
    "name": "get_weather",
    "description": "Current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def model(server: LlamaServer) -> LiteLLMModel:
    return LiteLLMModel("openai/gemma", api_base=server.base_url, native_tools=True)


def test_native_tool_call_comes_back_decoded(llama_tools_server: LlamaServer) -> None:
    m = model(llama_tools_server)
    request = ModelRequest(
        prompt="What is the weather in Paris?",
        tools=(WEATHER,),
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        settings=Settings(max_tokens=40),
    )
    response = anyio.run(m.generate, request)
    (call,) = response.tool_calls
    assert call["name"] == "get_weather"
    assert isinstance(call["arguments"].get("city"), str) and call["id"]


def test_api_base_models_do_not_assume_native_tools() -> None:
    assert not LiteLLMModel("openai/x", api_base="http://127.0.0.1:1/v1").native_tools
    assert LiteLLMModel(
        "openai/x", api_base="http://127.0.0.1:1/v1", native_tools=True
    ).native_tools


def test_agent_uses_native_tool_calls_then_a_structured_final_answer(
    llama_tools_server: LlamaServer,
) -> None:
    seen: list[dict[str, Any]] = []

    @fr.tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        seen.append({"city": city})
        return f"sunny, 21 C in {city}"

    @fr.agent(
        model=model(llama_tools_server),
        tools=[get_weather],
        output=str,
        max_steps=2,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        settings={"max_tokens": 40},
    )
    def forecast(question: str) -> str:
        "{{ question }}"

    @fr.workflow
    def wf(question: str) -> str:
        return forecast(question)

    result = wf.run(question="What is the weather in Paris?")
    record = result.records["forecast"]
    assert record.status == "succeeded", record.error
    first = record.trace[0]
    assert first["native"] is True and first["calls"][0]["name"] == "get_weather"
    assert first["calls"][0]["result"].startswith("sunny")
    assert seen and isinstance(result.output, str)
    assert record.trace[-1]["final"] == result.output
