"""Calibration: the confidence threshold that meets a target accuracy at the lowest cost.

Every model of a node's cascade answers every labelled example once, with its confidence
(mean token probability). Replaying the cascade over those answers for each candidate
threshold gives its accuracy and cost; the cheapest threshold that meets the target wins.
`write_threshold` puts it back into the workflow file, changing only that value.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flowroute.cascade.cascade import Cascade
from flowroute.cascade.verifiers import Confidence
from flowroute.errors import FlowrouteError

__all__ = ["Calibration", "Example", "Outcome", "calibrate", "load_examples", "write_threshold"]


@dataclass(frozen=True)
class Example:
    """Workflow inputs, and the node output that is right for them."""

    inputs: Mapping[str, Any]
    expected: Any = None


@dataclass(frozen=True)
class Outcome:
    """One model's answer to one example."""

    model: str
    confidence: float
    correct: bool
    cost: float
    latency: float


@dataclass(frozen=True)
class Candidate:
    threshold: float
    accuracy: float
    cost_per_task: float
    fallback_rate: float


@dataclass
class Calibration:
    """The result: the chosen `threshold` (None when no threshold meets the target) and every
    candidate, plus each model's outcomes."""

    node: str
    target: float
    threshold: float | None
    candidates: list[Candidate]
    outcomes: dict[str, list[Outcome]] = field(default_factory=dict)

    @property
    def chosen(self) -> Candidate | None:
        return next((c for c in self.candidates if c.threshold == self.threshold), None)


def load_examples(path: str | Path) -> list[Example]:
    """JSON Lines: `{"inputs": {...}, "expected": ...}` per line."""
    out = []
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise FlowrouteError(f"{path}:{i}: not JSON: {exc.msg}") from exc
        if not isinstance(row, dict) or not isinstance(row.get("inputs"), dict):
            raise FlowrouteError(f'{path}:{i}: expected {{"inputs": {{...}}, "expected": ...}}')
        out.append(Example(row["inputs"], row.get("expected")))
    if not out:
        raise FlowrouteError(f"{path}: no examples")
    return out


def _cascade_of(workflow: Any, node: str) -> Cascade:
    found = workflow.nodes.get(node)
    if found is None:
        raise FlowrouteError(f"no node '{node}' (nodes: {', '.join(workflow.nodes)})")
    model = getattr(found, "model", None)
    if not isinstance(model, Cascade):
        raise FlowrouteError(f"node '{node}': its model is not a cascade")
    if not any(isinstance(v, Confidence) for v in model.verifiers):
        raise FlowrouteError(f"node '{node}': its cascade has no confidence verifier")
    return model


async def calibrate(
    workflow: Any,
    node: str,
    examples: Sequence[Example],
    *,
    target: float,
    check: Callable[[Any, Example], bool] | None = None,
    prices: Mapping[str, float] | None = None,
) -> Calibration:
    """Find the confidence threshold for `node`'s cascade that reaches `target` accuracy on
    `examples` at the lowest cost per task.

    `check(output, example)` decides correctness (default: equality with `expected`).
    `prices` (USD per million tokens, by model name) replace reported costs, so that local
    models can be given a price.
    """
    cascade = _cascade_of(workflow, node)
    is_right = check or (lambda output, ex: output == ex.expected)
    outcomes: dict[str, list[Outcome]] = {}
    for ref in cascade.models:
        # the model alone, answering with its confidence measured (min_mean=0 always passes)
        probe = Cascade((ref,), (Confidence(min_mean=0.0),), "error")
        nodes = dict(workflow.nodes)
        nodes[node] = dataclasses.replace(workflow.nodes[node], model=probe)
        probe_wf = dataclasses.replace(workflow, nodes=nodes)
        rows: list[Outcome] = []
        for ex in examples:
            result = await probe_wf.arun(**dict(ex.inputs))
            record = result.records[node]
            confidence = 0.0
            if record.cascade and record.cascade[0].get("verdicts"):
                confidence = float(record.cascade[0]["verdicts"][-1]["score"])
            tokens = record.prompt_tokens + record.completion_tokens
            model_name = record.answered_by or str(ref)
            if prices and model_name in prices:
                cost = tokens * prices[model_name] / 1e6
            else:
                cost = sum(c.cost or 0.0 for c in record.calls)
            correct = record.status == "succeeded" and bool(is_right(record.output, ex))
            rows.append(Outcome(model_name, confidence, correct, cost, record.duration or 0.0))
        outcomes[str(ref)] = rows
    per_model = list(outcomes.values())
    thresholds = sorted({0.0, 1.0, *(o.confidence for rows in per_model[:-1] for o in rows)})
    candidates = [_replay(t, per_model) for t in thresholds]
    meeting = [c for c in candidates if c.accuracy >= target]
    chosen = min(meeting, key=lambda c: (c.cost_per_task, -c.accuracy)) if meeting else None
    return Calibration(node, target, chosen.threshold if chosen else None, candidates, outcomes)


def _replay(threshold: float, per_model: Sequence[Sequence[Outcome]]) -> Candidate:
    right = cost = fallbacks = 0.0
    n = len(per_model[0])
    for i in range(n):
        for j, rows in enumerate(per_model):
            o = rows[i]
            cost += o.cost
            if o.confidence >= threshold or j == len(per_model) - 1:
                right += o.correct
                fallbacks += j > 0
                break
    return Candidate(threshold, right / n, cost / n, fallbacks / n)


def write_threshold(path: str | Path, node: str, threshold: float) -> None:
    """Set `min_mean` of the confidence verifier of `node`'s cascade in the YAML file `path`,
    editing only that value (comments and layout are kept)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    root = yaml.compose(text)
    target = _find(root, ["nodes", node])
    spec = None
    for kind in ("llm", "agent"):
        spec = _find(target, [kind, "model", "verifiers"]) if target is not None else None
        if spec is not None:
            break
    if not isinstance(spec, yaml.SequenceNode):
        raise FlowrouteError(f"{path}: node '{node}' has no cascade verifiers")
    value = f"{threshold:.4g}"
    for item in spec.value:
        confidence = _find(item, ["confidence"])
        if confidence is None:
            continue
        current = _find(confidence, ["min_mean"])
        if isinstance(current, yaml.ScalarNode):
            start, end = current.start_mark.index, current.end_mark.index
            text = text[:start] + value + text[end:]
        else:  # no min_mean yet: write the whole mapping
            start, end = confidence.start_mark.index, confidence.end_mark.index
            text = text[:start] + f"{{min_mean: {value}}}" + text[end:]
        path.write_text(text, encoding="utf-8")
        return
    raise FlowrouteError(f"{path}: node '{node}' has no confidence verifier")


def _find(node: Any, keys: Sequence[str]) -> Any:
    for key in keys:
        if not isinstance(node, yaml.MappingNode):
            return None
        node = next((v for k, v in node.value if k.value == key), None)
        if node is None:
            return None
    return node
