"""Models reached through litellm: hosted providers, or any OpenAI-compatible server.

```python
import flowroute as fr

hosted = fr.models.litellm("openai/gpt-4o-mini", api_key_env="OPENAI_API_KEY")
# An OpenAI-compatible server (llama.cpp, vLLM, Ollama, LM Studio, ...): name the model
# "openai/<model>" so litellm speaks the OpenAI protocol, and give the server's URL.
server = fr.models.litellm("openai/gemma", api_base="http://127.0.0.1:8080/v1")
```

Structured output. When a request has an output constraint, the JSON Schema is sent in the
strongest form the provider accepts (`structured=`):

- `"json_schema"`: OpenAI structured outputs,
  `response_format={"type": "json_schema", "json_schema": {"name": "output", "schema": ...}}`.
- `"json_object"`: JSON mode, `{"type": "json_object"}`, with the schema described in the
  prompt. When `api_base` is set the schema is also sent as `response_format["schema"]`, the
  extension llama.cpp's servers (llama-cpp-python and llama-server) compile to a grammar.
- `"none"`: no response format; the constraint is described in the prompt only.
- `"auto"` (default): `"json_schema"` when `api_base` is set or litellm says the model supports
  response schemas; otherwise `"json_object"` when the provider has a JSON mode, else `"none"`.
  If the server rejects the `json_schema` format (llama-cpp-python's server accepts only
  `"text"` and `"json_object"`), the model falls back to `"json_object"` and remembers that.
  The first `json_schema` call is made without client retries, so a refusal costs one request.

Choices (`Literal[...]`) and regexes, and any schema whose root is not an object, are sent as
`{"value": ...}` objects (a response format must describe an object) and unwrapped; with
`"none"` the bare answer is asked for. Object schemas are tightened for strict mode (every
property required, no additional properties); anything valid against the tightened schema is
valid against the original.

Every output is validated with the constraint. Invalid output is shown back to the model with
the validation errors, up to `repair_retries` times; then `OutputRepairError` (a `ModelError`)
is raised with the last output and its errors. Token counts, latency and cost in the response
cover all attempts. Cost comes from litellm's price table and is None when the price is unknown
(a self-hosted model, say), never a made-up zero. `constrained` is always False: whatever a
provider does while decoding cannot be verified from here, only the output can.

Importing litellm is deferred to the first call. It is imported with
`LITELLM_LOCAL_MODEL_COST_MAP=True` unless that variable is set, so the import uses the price
table shipped with litellm instead of fetching one from the network.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import time
from dataclasses import dataclass
from typing import Any, Literal, cast

from flowroute.errors import MissingExtraError, ModelError, OutputValidationError
from flowroute.models.base import Message, Model, ModelRequest, ModelResponse
from flowroute.structured.constraint import OutputConstraint

__all__ = ["LiteLLMModel", "OutputRepairError", "StructuredMode"]

StructuredMode = Literal["auto", "json_schema", "json_object", "none"]
_MODES = ("auto", "json_schema", "json_object", "none")

WRAP_KEY = "value"
"""Field that carries a non-object answer (a choice, a regex match, a list...)."""

NO_KEY = "no-key"
"""API key sent to an `api_base` server when `api_key_env` is not given.

OpenAI clients refuse to send a request without a key, and sending `OPENAI_API_KEY` to an
arbitrary server would leak it: servers that need a key get one through `api_key_env`.
"""


class OutputRepairError(ModelError):
    """The output still did not validate after all repair retries. `attempts` counts the calls."""

    def __init__(
        self,
        model: str,
        message: str,
        *,
        attempts: int,
        raw_text: str | None,
        validation_errors: list[str],
    ) -> None:
        super().__init__(model, message, raw_text=raw_text, validation_errors=validation_errors)
        self.attempts = attempts


def _import_litellm() -> Any:
    """litellm, imported offline-friendly; `MissingExtraError` when it is not installed."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        import litellm
    except ImportError as exc:
        raise MissingExtraError("litellm", "litellm", "litellm models") from exc
    litellm.suppress_debug_info = True
    return litellm


# -- request building (pure functions) -------------------------------------------------------


@dataclass(frozen=True)
class OutputFormat:
    """How one constraint is asked for under one structured mode, and how answers are read."""

    mode: Literal["json_schema", "json_object", "none"]
    constraint: OutputConstraint
    schema: dict[str, Any] | None
    """The schema sent (and described) for JSON modes: tightened, wrapped when `wrapped`."""
    wrapped: bool
    strict: bool
    send_schema_key: bool = False

    @classmethod
    def build(
        cls,
        constraint: OutputConstraint,
        mode: Literal["json_schema", "json_object", "none"],
        *,
        send_schema_key: bool = False,
    ) -> OutputFormat:
        if mode == "none":
            return cls(mode, constraint, None, wrapped=False, strict=False)
        inner = answer_schema(constraint)
        wrapped = constraint.kind != "json" or inner.get("type") != "object"
        schema = wrap_schema(inner) if wrapped else copy.deepcopy(inner)
        strict = tighten_schema(schema)
        return cls(
            mode,
            constraint,
            schema,
            wrapped=wrapped,
            strict=strict,
            send_schema_key=send_schema_key,
        )

    def response_format(self) -> dict[str, Any] | None:
        if self.mode == "json_schema":
            return {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": self.schema, "strict": self.strict},
            }
        if self.mode == "json_object":
            rf: dict[str, Any] = {"type": "json_object"}
            if self.send_schema_key:
                rf["schema"] = self.schema
            return rf
        return None

    def instruction(self) -> str | None:
        """What to add to the prompt; None when the response format says it all."""
        if self.mode == "json_schema":
            return None
        if self.mode == "none":
            return self.constraint.describe()
        return self.describe_json()

    def describe_json(self) -> str:
        text = "Answer with a JSON object valid against this JSON Schema:\n" + json.dumps(
            self.schema
        )
        if self.wrapped:
            text += f'\nPut the answer in the "{WRAP_KEY}" field.'
        return text

    def describe(self) -> str:
        return self.constraint.describe() if self.mode == "none" else self.describe_json()

    def parse(self, text: str) -> Any:
        """The validated value of `text`, or `OutputValidationError`."""
        if self.mode == "none" or not self.wrapped:
            return self.constraint.parse(text)
        try:
            data = json.loads(strip_fences(text))
        except json.JSONDecodeError as exc:
            raise OutputValidationError("model output", [f"not valid JSON: {exc}"], text) from exc
        if not isinstance(data, dict) or WRAP_KEY not in data:
            raise OutputValidationError(
                "model output", [f'expected a JSON object with a "{WRAP_KEY}" field'], text
            )
        inner = data[WRAP_KEY]
        if self.constraint.kind == "json":
            return self.constraint.parse(json.dumps(inner))
        if not isinstance(inner, str):
            raise OutputValidationError(
                "model output", [f'"{WRAP_KEY}" must be a string, not {json.dumps(inner)}'], text
            )
        return self.constraint.parse(inner)


def answer_schema(constraint: OutputConstraint) -> dict[str, Any]:
    """The JSON Schema of the answer itself (before any wrapping)."""
    if constraint.kind == "choice":
        return {"type": "string", "enum": list(constraint.choices)}
    if constraint.kind == "regex":
        return {"type": "string", "pattern": f"^({constraint.pattern})$"}
    return constraint.schema


def wrap_schema(inner: dict[str, Any]) -> dict[str, Any]:
    """`{"value": inner}` as an object schema; `$defs` move to the root so `$ref`s still resolve."""
    inner = copy.deepcopy(inner)
    defs = inner.pop("$defs", None)
    out: dict[str, Any] = {
        "type": "object",
        "properties": {WRAP_KEY: inner},
        "required": [WRAP_KEY],
        "additionalProperties": False,
    }
    if defs is not None:
        out["$defs"] = defs
    return out


def tighten_schema(schema: Any) -> bool:
    """Make `schema` strict-mode shaped in place; False if some object cannot be (a free dict).

    Objects with `properties` get every property required and no additional properties, which
    only narrows the set of valid values; `default` annotations are dropped.
    """
    if isinstance(schema, list):
        return all([tighten_schema(s) for s in schema])
    if not isinstance(schema, dict):
        return True
    schema.pop("default", None)  # an annotation only; strict mode refuses it
    ok = True
    if schema.get("type") == "object" or "properties" in schema:
        if "properties" in schema:
            schema["required"] = list(schema["properties"])
            schema["additionalProperties"] = False
        elif schema.get("additionalProperties") is not False:
            ok = False
    for key in ("properties", "$defs", "definitions", "patternProperties"):
        sub = schema.get(key)
        if isinstance(sub, dict):
            ok = all([tighten_schema(s) for s in sub.values()]) and ok
    for key in ("items", "anyOf", "oneOf", "allOf", "prefixItems"):
        if key in schema:
            ok = tighten_schema(schema[key]) and ok
    if isinstance(schema.get("additionalProperties"), dict):
        tighten_schema(schema["additionalProperties"])  # a free dict: never strict
        ok = False
    return ok


def strip_fences(text: str) -> str:
    """JSON without the Markdown fences chat models like to add."""
    m = re.fullmatch(r"\s*```(?:json)?\s*(.*?)\s*```\s*", text, re.S)
    return m.group(1) if m else text


def with_instruction(messages: list[Message], instruction: str | None) -> list[Message]:
    """`messages` with `instruction` appended to the last user message.

    Not a system message: several chat templates (Gemma's among them) drop or merge those.
    """
    out = [dict(m) for m in messages]
    if not instruction:
        return out
    for m in reversed(out):
        if m.get("role") == "user":
            m["content"] = f"{m['content']}\n\n{instruction}"
            return out
    out.append({"role": "user", "content": instruction})
    return out


def repair_messages(text: str, errors: list[str], fmt: OutputFormat) -> list[Message]:
    """The bad answer, then a request to correct it."""
    listed = "\n".join(f"- {e}" for e in errors)
    return [
        {"role": "assistant", "content": text},
        {
            "role": "user",
            "content": (
                f"That answer is invalid:\n{listed}\n\n{fmt.describe()}\n"
                "Reply with the corrected answer only."
            ),
        },
    ]


def sampling_params(request: ModelRequest) -> dict[str, Any]:
    """litellm keyword arguments for the request's settings (defaults left out)."""
    s = request.settings
    params: dict[str, Any] = {"max_tokens": s.max_tokens, "temperature": s.temperature}
    if s.top_p != 1.0:
        params["top_p"] = s.top_p
    if s.seed is not None:
        params["seed"] = s.seed
    if s.stop:
        params["stop"] = list(s.stop)
    if s.logprobs:
        params["logprobs"] = True
        params["top_logprobs"] = 1
    return params


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default)


def extract_logprobs(choice: Any) -> list[float] | None:
    """Per-token log-probabilities of a chat completion choice; None if not returned."""
    content = _get(_get(choice, "logprobs"), "content")
    if not content:
        return None
    values = [_get(item, "logprob") for item in content]
    if any(not isinstance(v, int | float) for v in values):
        return None
    return [float(v) for v in values]


def completion_cost(litellm: Any, response: Any) -> float | None:
    """The call's price in USD from litellm's table; None when the model is not priced."""
    try:
        cost = litellm.completion_cost(completion_response=response)
    except Exception:
        return None
    return float(cost) if isinstance(cost, int | float) else None


def _finish(reason: Any) -> Literal["stop", "length", "other"]:
    if reason in ("stop", "length"):
        return cast(Literal["stop", "length"], reason)
    return "other"


def _is_format_rejection(exc: Exception) -> bool:
    """Did the server refuse the `json_schema` response format (rather than fail otherwise)?"""
    status = getattr(exc, "status_code", None)
    if status not in (400, 415, 422, 500, 501):
        return False
    message = str(exc).lower()
    return "response_format" in message or "json_schema" in message


# -- the model -------------------------------------------------------------------------------


class LiteLLMModel(Model):
    """A model called through `litellm.acompletion`.

    Args:
        name: a litellm model string, `"provider/model"` (`"openai/gpt-4o-mini"`,
            `"anthropic/claude-..."`). For an OpenAI-compatible server use `"openai/<model>"`
            with `api_base`.
        api_base: the server's URL, e.g. `"http://127.0.0.1:8080/v1"`.
        api_key_env: environment variable holding the API key (read at call time). Without it
            litellm uses the provider's usual variable; `api_base` servers get a placeholder.
        repair_retries: how many times invalid structured output is sent back for correction.
        max_concurrency: calls the engine sends to this model at once.
        timeout: seconds per call.
        extra: more keyword arguments for `litellm.acompletion` (they win over computed ones).
        structured: how output constraints reach the provider; see the module docs.
    """

    def __init__(
        self,
        name: str,
        *,
        api_base: str | None = None,
        api_key_env: str | None = None,
        repair_retries: int = 2,
        max_concurrency: int = 8,
        timeout: float = 120,
        extra: dict[str, Any] | None = None,
        structured: StructuredMode = "auto",
        native_tools: bool | None = None,
    ) -> None:
        if structured not in _MODES:
            raise ModelError(
                name, f"structured must be one of {', '.join(_MODES)}, not {structured!r}"
            )
        if repair_retries < 0:
            raise ModelError(name, "repair_retries must be >= 0")
        self.name = name
        self.api_base = api_base
        self.api_key_env = api_key_env
        self.repair_retries = repair_retries
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.extra = dict(extra or {})
        self.structured: StructuredMode = structured
        self._native_tools = native_tools
        self._rejected_json_schema = False
        self._json_schema_accepted = False

    @property
    def native_tools(self) -> bool:
        """Native tool calling: as set, else what litellm knows of the provider (never for
        `api_base` servers unless set, since their support depends on how they were started)."""
        if self._native_tools is not None:
            return self._native_tools
        if self.api_base or importlib.util.find_spec("litellm") is None:
            return False
        try:
            return bool(_import_litellm().supports_function_calling(model=self.name))
        except Exception:
            return False

    def __repr__(self) -> str:
        base = f", api_base={self.api_base!r}" if self.api_base else ""
        return f"{type(self).__name__}({self.name!r}{base})"

    # -- checks ------------------------------------------------------------------------------

    def check(self) -> list[str]:
        problems: list[str] = []
        if self.api_key_env and not os.environ.get(self.api_key_env):
            problems.append(
                f"environment variable {self.api_key_env} (API key for model '{self.name}') "
                "is not set"
            )
        if self.api_base and "/" not in self.name:
            problems.append(
                f"model '{self.name}' has an api_base but no provider: for an OpenAI-compatible "
                f"server name it 'openai/{self.name}'"
            )
        if importlib.util.find_spec("litellm") is None:
            problems.append(
                "litellm models need the 'litellm' package: pip install \"flowroute[litellm]\""
            )
        elif not self.api_base and not self.api_key_env:
            try:
                env = _import_litellm().validate_environment(model=self.name)
                missing = [str(k) for k in env.get("missing_keys") or []]
                if not env.get("keys_in_environment") and missing:
                    problems.append(
                        f"model '{self.name}' needs environment variable(s) "
                        f"{', '.join(missing)}, which are not set"
                    )
            except Exception:
                pass
        return problems

    # -- request building --------------------------------------------------------------------

    def structured_mode(
        self, litellm: Any | None = None
    ) -> Literal["json_schema", "json_object", "none"]:
        """The structured mode used for constrained requests (resolving `"auto"`)."""
        if self.structured != "auto":
            return self.structured
        if self._rejected_json_schema:
            return "json_object"
        if self.api_base:
            return "json_schema"
        if litellm is None:
            litellm = _import_litellm()
        try:
            if litellm.supports_response_schema(model=self.name):
                return "json_schema"
        except Exception:
            pass
        try:
            params = litellm.get_supported_openai_params(model=self.name) or []
        except Exception:
            params = []
        return "json_object" if "response_format" in params else "none"

    def output_format(
        self, constraint: OutputConstraint, litellm: Any | None = None
    ) -> OutputFormat:
        return OutputFormat.build(
            constraint, self.structured_mode(litellm), send_schema_key=self.api_base is not None
        )

    def call_kwargs(self, request: ModelRequest) -> dict[str, Any]:
        """Keyword arguments for `litellm.acompletion`, except `messages` and `response_format`."""
        kwargs: dict[str, Any] = {"model": self.name, "timeout": self.timeout, "drop_params": True}
        if self.api_base:
            kwargs["api_base"] = self.api_base
        if self.api_key_env:
            kwargs["api_key"] = os.environ.get(self.api_key_env, "")
        elif self.api_base:
            kwargs["api_key"] = NO_KEY
        kwargs.update(sampling_params(request))
        kwargs.update(self.extra)
        return kwargs

    # -- generation --------------------------------------------------------------------------

    async def generate(self, request: ModelRequest) -> ModelResponse:
        litellm = _import_litellm()
        if self.api_key_env and not os.environ.get(self.api_key_env):
            raise ModelError(
                self.name, f"environment variable {self.api_key_env} (API key) is not set"
            )
        kwargs = self.call_kwargs(request)
        constraint = request.constraint
        start = time.perf_counter()
        if request.tools:
            kwargs["tools"] = [{"type": "function", "function": t} for t in request.tools]
            kwargs["tool_choice"] = request.tool_choice or "auto"
            raw = await self._call(litellm, kwargs, request.as_messages(), None)
            response = self._response(litellm, [raw], start, value=None, free_text=True)
            response.tool_calls = _tool_calls(raw)
            return response
        if constraint is None:
            raw = await self._call(litellm, kwargs, request.as_messages(), None)
            return self._response(litellm, [raw], start, value=None, free_text=True)

        fmt = self.output_format(constraint, litellm)
        messages = with_instruction(request.as_messages(), fmt.instruction())
        raws: list[Any] = []
        while True:
            try:
                raw = await self._call(litellm, kwargs, messages, fmt.response_format())
            except _FormatRejected:
                # The server refuses json_schema: fall back to JSON mode (+ schema key) for good.
                self._rejected_json_schema = True
                fmt = self.output_format(constraint, litellm)
                messages = with_instruction(request.as_messages(), fmt.instruction())
                continue
            raws.append(raw)
            text, finish = _text(raw)
            try:
                value = fmt.parse(text)
            except OutputValidationError as exc:
                if len(raws) > self.repair_retries:
                    hint = (
                        f"; the output was cut off at max_tokens={request.settings.max_tokens}: "
                        "raise max_tokens"
                        if finish == "length"
                        else ""
                    )
                    raise OutputRepairError(
                        self.name,
                        f"output did not validate after {len(raws)} attempt(s) "
                        f"({self.repair_retries} repair retries){hint}",
                        attempts=len(raws),
                        raw_text=text,
                        validation_errors=exc.errors,
                    ) from exc
                messages = messages + repair_messages(text, exc.errors, fmt)
                continue
            return self._response(litellm, raws, start, value=value, free_text=False)

    async def _call(
        self,
        litellm: Any,
        kwargs: dict[str, Any],
        messages: list[Message],
        response_format: dict[str, Any] | None,
    ) -> Any:
        call = dict(kwargs, messages=messages)
        if response_format is not None:
            call["response_format"] = response_format
        probing = (
            self.structured == "auto"
            and not self._json_schema_accepted
            and response_format is not None
            and response_format.get("type") == "json_schema"
        )
        if probing:
            # First json_schema call of an "auto" model: a rejection must not be retried by the
            # client (llama-cpp-python answers it with HTTP 500, which clients retry).
            try:
                raw = await litellm.acompletion(**{"max_retries": 0, **call})
            except Exception as exc:
                if _is_format_rejection(exc):
                    raise _FormatRejected from exc
                # Some other failure: make the call again, with the usual retries.
            else:
                self._json_schema_accepted = True
                return raw
        try:
            return await litellm.acompletion(**call)
        except Exception as exc:
            where = f" at {self.api_base}" if self.api_base else ""
            raise ModelError(self.name, f"call failed{where}: {type(exc).__name__}: {exc}") from exc

    def _response(
        self, litellm: Any, raws: list[Any], start: float, *, value: Any, free_text: bool
    ) -> ModelResponse:
        last = raws[-1]
        text, finish = _text(last)
        prompt_tokens = completion_tokens = 0
        cost: float | None = 0.0
        for raw in raws:
            usage = _get(raw, "usage")
            prompt_tokens += int(_get(usage, "prompt_tokens", 0) or 0)
            completion_tokens += int(_get(usage, "completion_tokens", 0) or 0)
            one = completion_cost(litellm, raw)
            cost = None if cost is None or one is None else cost + one
        choices = _get(last, "choices") or [None]
        return ModelResponse(
            text=text,
            model=self.name,
            value=text if free_text else value,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency=time.perf_counter() - start,
            cost=cost,
            logprobs=extract_logprobs(choices[0]),
            constrained=False,
            finish_reason=finish,
            attempts=len(raws),
            raw=last,
        )


def _tool_calls(raw: Any) -> list[dict[str, Any]]:
    """`{"id", "name", "arguments"}` for each native tool call; undecodable arguments are
    kept as `{"__invalid_json__": text}` so the agent can show the model its mistake."""
    choices = _get(raw, "choices") or []
    message = _get(choices[0], "message") if choices else None
    out: list[dict[str, Any]] = []
    for i, call in enumerate(_get(message, "tool_calls") or []):
        function = _get(call, "function")
        text = _get(function, "arguments") or "{}"
        try:
            arguments = json.loads(text) if isinstance(text, str) else dict(text)
        except (json.JSONDecodeError, TypeError, ValueError):
            arguments = {"__invalid_json__": text}
        out.append(
            {
                "id": _get(call, "id") or f"call_{i}",
                "name": _get(function, "name"),
                "arguments": arguments if isinstance(arguments, dict) else {"value": arguments},
            }
        )
    return out


class _FormatRejected(Exception):
    """Internal: the `json_schema` response format was refused; retry in JSON mode."""


def _text(raw: Any) -> tuple[str, Literal["stop", "length", "other"]]:
    choices = _get(raw, "choices") or []
    if not choices:
        return "", "other"
    choice = choices[0]
    content = _get(_get(choice, "message"), "content")
    return (content if isinstance(content, str) else ""), _finish(_get(choice, "finish_reason"))
