"""The `flowroute` command: parsing and printing only; it calls the public API.

Exit codes: 0 success, 1 the workflow failed, 2 invalid file or arguments, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

import flowroute as fr
from flowroute.engine.result import NodeRecord, RunResult, jsonable

__all__ = ["main"]

_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "skipped": "yellow",
    "cancelled": "magenta",
    "running": "cyan",
    "pending": "dim",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flowroute", description="Run and check flowroute workflows.")
    p.add_argument("--version", action="version", version=f"flowroute {fr.__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a workflow file")
    run.add_argument("file")
    run.add_argument(
        "--input",
        "-i",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an input value (JSON is parsed for non-string inputs); repeatable",
    )
    run.add_argument("--inputs-file", metavar="FILE.json", help="inputs as a JSON object")
    run.add_argument("--json", action="store_true", help="print the full result as JSON")
    run.add_argument("--max-concurrency", type=int, default=16)
    run.add_argument("--fail-fast", action="store_true", help="cancel the run at the first failure")
    val = sub.add_parser("validate", help="check a workflow file without running it")
    val.add_argument("file")
    graph = sub.add_parser("graph", help="print the workflow as a Mermaid diagram")
    graph.add_argument("file")
    cal = sub.add_parser(
        "calibrate",
        help="pick a cascade's confidence threshold from labelled examples",
        description="Run every model of NODE's cascade on labelled examples and pick the "
        "confidence threshold that meets --target accuracy at the lowest cost per task.",
    )
    cal.add_argument("file")
    cal.add_argument("--node", required=True, help="the node whose cascade to calibrate")
    cal.add_argument(
        "--data",
        required=True,
        metavar="FILE.jsonl",
        help='lines of {"inputs":..., "expected":...}',
    )
    cal.add_argument("--target", type=float, required=True, help="accuracy to reach, e.g. 0.9")
    cal.add_argument(
        "--check", metavar="MODULE:FUNCTION", help="check(output, example) -> bool (default: ==)"
    )
    cal.add_argument(
        "--price",
        action="append",
        default=[],
        metavar="MODEL=USD_PER_MTOK",
        help="price per million tokens for a model (replaces its reported cost); repeatable",
    )
    cal.add_argument("--write", action="store_true", help="write the threshold into FILE")
    schema = sub.add_parser("schema", help="print the JSON Schema of workflow files")
    schema.add_argument("--output", "-o", help="write to this file instead of stdout")
    return p


class _Usage(Exception):
    pass


def _inputs(wf: fr.Workflow[Any], args: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if args.inputs_file:
        try:
            data = json.loads(Path(args.inputs_file).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise _Usage(f"--inputs-file {args.inputs_file}: {exc}") from exc
        if not isinstance(data, dict):
            raise _Usage(f"--inputs-file {args.inputs_file}: expected a JSON object")
        values.update(data)
    for item in args.input:
        key, sep, raw = item.partition("=")
        if not sep:
            raise _Usage(f"--input {item!r}: expected KEY=VALUE")
        spec = wf.inputs.get(key)
        if spec is not None and spec.schema.get("type") not in (None, "string"):
            try:
                values[key] = json.loads(raw)
                continue
            except json.JSONDecodeError:
                pass
        values[key] = raw
    return values


def _table(records: dict[str, NodeRecord], title: str | None = None) -> Table:
    t = Table(title=title, show_lines=False)
    for col in ("node", "kind", "status", "time", "model", "tokens", "note"):
        t.add_column(col, overflow="fold")
    for r in records.values():
        style = _STYLE.get(r.status, "")
        note = r.error or r.skip_reason or ""
        tokens = r.prompt_tokens + r.completion_tokens
        t.add_row(
            r.name,
            r.kind,
            f"[{style}]{r.status}[/]",
            f"{r.duration:.2f}s" if r.duration is not None else "",
            r.model or "",
            str(tokens) if tokens else "",
            note[:200],
        )
    return t


def _print_result(result: RunResult[Any], as_json: bool, out: Console) -> None:
    if as_json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
        return
    out.print(_table(result.records, title=f"{result.workflow}: {result.status}"))
    if result.ok:
        print(json.dumps(jsonable(result.output), indent=2, ensure_ascii=False))
    else:
        err = Console(stderr=True, soft_wrap=True)
        err.print(f"error: {result.error}", style="red", markup=False)


def _load(path: str) -> fr.Workflow[Any]:
    if not Path(path).is_file():
        raise _Usage(f"no such workflow file: {path}")
    return fr.load(path)


def _cmd_run(args: argparse.Namespace, out: Console) -> int:
    wf = _load(args.file)
    inputs = _inputs(wf, args)
    live_enabled = out.is_terminal and not args.json
    records: dict[str, NodeRecord] = {}
    live = (
        Live(_table(records), console=out, refresh_per_second=8, transient=True)
        if live_enabled
        else None
    )

    def update(record: NodeRecord) -> None:
        records[record.name] = record
        if live is not None:
            live.update(_table(records, title=f"{wf.name}: running"))

    options = fr.RunOptions(
        max_concurrency=args.max_concurrency,
        on_failure="stop" if args.fail_fast else "continue",
        on_update=update,
    )
    try:
        if live is not None:
            with live:
                result = wf.run(options, **inputs)
        else:
            result = wf.run(options, **inputs)
    except fr.RunInterrupted as exc:
        _print_result(exc.result, args.json, out)
        return 130
    _print_result(result, args.json, out)
    return 0 if result.ok else 1


def _cmd_calibrate(args: argparse.Namespace, out: Console) -> int:
    import importlib

    import anyio
    from rich.table import Table

    from flowroute.cascade.calibrate import calibrate, load_examples, write_threshold

    wf = _load(args.file)
    examples = load_examples(args.data)
    check = None
    if args.check:
        module, _, attr = args.check.partition(":")
        try:
            check = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise _Usage(f"--check {args.check}: {exc}") from exc
    prices: dict[str, float] = {}
    for item in args.price:
        name, sep, value = item.partition("=")
        try:
            prices[name] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise _Usage(f"--price {item!r}: expected MODEL=USD_PER_MTOK")
    result = anyio.run(
        lambda: calibrate(wf, args.node, examples, target=args.target, check=check, prices=prices)
    )
    table = Table(title=f"{args.node}: {len(examples)} examples, target accuracy {args.target}")
    for col in ("threshold", "accuracy", "cost/task", "fallback rate"):
        table.add_column(col, justify="right")
    for c in result.candidates:
        mark = " *" if c.threshold == result.threshold else ""
        table.add_row(
            f"{c.threshold:.4g}{mark}",
            f"{c.accuracy:.1%}",
            f"${c.cost_per_task:.6f}",
            f"{c.fallback_rate:.1%}",
        )
    out.print(table)
    for model, rows in result.outcomes.items():
        acc = sum(o.correct for o in rows) / len(rows)
        out.print(f"{model} alone: accuracy {acc:.1%}", highlight=False)
    if result.threshold is None:
        out.print(f"[red]no threshold reaches accuracy {args.target}[/]")
        return 1
    out.print(f"chosen min_mean: {result.threshold:.4g}", highlight=False)
    if args.write:
        write_threshold(args.file, args.node, result.threshold)
        out.print(f"written to {args.file}", highlight=False)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = Console()
    err = Console(stderr=True, soft_wrap=True)  # one line per problem: `file:line:` stays greppable
    try:
        if args.command == "schema":
            from flowroute.frontends.yaml import file_schema

            text = json.dumps(file_schema(), indent=2) + "\n"
            if args.output:
                Path(args.output).write_text(text, encoding="utf-8")
            else:
                sys.stdout.write(text)
            return 0
        if args.command == "run":
            return _cmd_run(args, out)
        if args.command == "calibrate":
            return _cmd_calibrate(args, out)
        wf = _load(args.file)
        if args.command == "validate":
            for p in wf.validate():
                err.print(str(p), style="yellow", markup=False, highlight=False)
            ok = f"[green]ok[/]: {args.file} ({len(wf.nodes)} nodes)"
            out.print(ok, highlight=False, soft_wrap=True)
            return 0
        sys.stdout.write(wf.to_mermaid())
        return 0
    except fr.WorkflowDefinitionError as exc:
        for p in exc.problems:
            err.print(
                str(p),
                style="red" if p.severity == "error" else "yellow",
                markup=False,
                highlight=False,
            )
        return 2
    except (fr.InputError, _Usage) as exc:
        err.print(f"error: {exc}", style="red", markup=False, highlight=False)
        return 2
    except fr.FlowrouteError as exc:
        err.print(f"error: {exc}", style="red", markup=False, highlight=False)
        return 1
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
