"""The `flowroute` command: exit codes 0 ok, 1 the workflow failed, 2 invalid file or arguments."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import flowroute as fr
from flowroute.cli import main

ROOT = Path(__file__).resolve().parents[1]
TRIAGE = ROOT / "examples" / "triage.yaml"
CONSOLE_SCRIPT = Path(sys.executable).parent / "flowroute"

TOOLS_MODULE = "fr_cli_tools"
TOOLS_SOURCE = """
def greet(name: str, times: int = 1) -> str:
    return " ".join([f"hello {name}"] * times)


def length(name: str) -> int:
    return len(name)


def explode(name: str) -> str:
    raise ValueError(f"cannot handle {name}")
"""

TINY = f"""\
name: tiny
inputs:
  name: string
  times: {{type: integer, default: 1}}
tools:
  greet: {TOOLS_MODULE}:greet
  length: {TOOLS_MODULE}:length
nodes:
  hello:
    tool: greet
    args: {{name: "{{{{ inputs.name }}}}", times: "{{{{ inputs.times }}}}"}}
  size:
    tool: length
    args: {{name: "{{{{ inputs.name }}}}"}}
output:
  greeting: hello
  size: size
"""

FAILING = f"""\
name: failing
inputs:
  name: string
tools:
  explode: {TOOLS_MODULE}:explode
  length: {TOOLS_MODULE}:length
nodes:
  bad:
    tool: explode
    args: {{name: "{{{{ inputs.name }}}}"}}
  size:
    tool: length
    args: {{name: "{{{{ inputs.name }}}}"}}
output:
  bad: bad
  size: size
"""

INVALID = f"""\
name: invalid
inputs:
  name: string
tools:
  length: {TOOLS_MODULE}:length
nodes:
  size:
    tool: length
    args:
      name: "{{{{ nobody }}}}"
output: size
"""


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    """A folder holding the tools module and the workflow files (a long path, on purpose)."""
    here = tmp_path / "a-folder-with-a-rather-long-name" / "and-another-one-below-it"
    here.mkdir(parents=True)
    (here / f"{TOOLS_MODULE}.py").write_text(TOOLS_SOURCE)
    for name, text in {"tiny.yaml": TINY, "failing.yaml": FAILING, "invalid.yaml": INVALID}.items():
        (here / name).write_text(text)
    yield here
    sys.modules.pop(TOOLS_MODULE, None)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def output_json(stdout: str) -> Any:
    """The JSON document printed after the status table."""
    lines = stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line in ("{", "[") or line.startswith('"'))
    return json.loads("\n".join(lines[start:]))


# -- validate --------------------------------------------------------------------------------


def test_validate_a_valid_file(capsys: pytest.CaptureFixture[str], folder: Path) -> None:
    code, out, err = run_cli(capsys, "validate", folder / "tiny.yaml")
    assert code == 0
    assert out.strip() == f"ok: {folder / 'tiny.yaml'} (2 nodes)"
    assert err == ""


def test_validate_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "validate", TRIAGE)
    assert code == 0
    assert "ok:" in out and "(6 nodes)" in out


def test_validate_prints_warnings_but_succeeds(
    capsys: pytest.CaptureFixture[str], folder: Path
) -> None:
    path = folder / "warn.yaml"
    path.write_text(TINY.replace("  name: string\n", "  name: string\n  spare: string\n"))
    code, _, err = run_cli(capsys, "validate", path)
    assert code == 0
    assert f"{path}:4: warning: 'inputs.spare': workflow input is never used" in err.splitlines()


def test_validate_an_invalid_file_reports_file_and_line(
    capsys: pytest.CaptureFixture[str], folder: Path
) -> None:
    path = folder / "invalid.yaml"
    code, out, err = run_cli(capsys, "validate", path)
    assert code == 2
    assert out == ""
    # one problem per line, never wrapped, so editors and grep can read `file:line:`
    assert err.splitlines() == [
        f"{path}:10: error: node 'size', field 'name': reference to unknown node 'nobody' "
        "(nodes: size)",
        f"{path}:3: warning: 'inputs.name': workflow input is never used",
    ]


def test_validate_a_file_that_does_not_parse(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nnodes:\n  a: [\n")
    code, _, err = run_cli(capsys, "validate", path)
    assert code == 2
    assert err.startswith(f"{path}:4: error: not valid YAML")


def test_validate_a_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run_cli(capsys, "validate", tmp_path / "nope.yaml")
    assert code == 2
    assert out == ""
    assert f"error: no such workflow file: {tmp_path / 'nope.yaml'}" in err


# -- graph / schema --------------------------------------------------------------------------


def test_graph_prints_a_mermaid_flowchart(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "graph", TRIAGE)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "flowchart TD"
    assert '  inputs(["inputs: ticket"])' in lines
    assert '  n_team[/"tool: team"/]' in lines
    assert "  n_category -- \"category == 'refund'\" --> n_policy" in lines
    assert "  n_next_step --> output" in lines


def test_schema_prints_the_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "schema")
    assert code == 0
    schema = json.loads(out)
    assert schema["title"] == "flowroute workflow"
    assert set(schema["required"]) == {"name", "nodes", "output"}


def test_schema_can_be_written_to_a_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "workflow.schema.json"
    code, out, _ = run_cli(capsys, "schema", "-o", target)
    assert (code, out) == (0, "")
    assert json.loads(target.read_text())["$schema"].endswith("2020-12/schema")


# -- run -------------------------------------------------------------------------------------


def test_run_prints_the_output_as_json(capsys: pytest.CaptureFixture[str], folder: Path) -> None:
    code, out, err = run_cli(capsys, "run", folder / "tiny.yaml", "-i", "name=Ada")
    assert code == 0, err
    assert output_json(out) == {"greeting": "hello Ada", "size": 3}
    assert "tiny: succeeded" in out  # the status table


def test_run_parses_non_string_inputs_as_json(
    capsys: pytest.CaptureFixture[str], folder: Path
) -> None:
    code, out, _ = run_cli(
        capsys, "run", folder / "tiny.yaml", "-i", "name=7", "--input", "times=2"
    )
    assert code == 0
    assert output_json(out) == {"greeting": "hello 7 hello 7", "size": 1}  # name stays a string


def test_run_reads_inputs_from_a_file(capsys: pytest.CaptureFixture[str], folder: Path) -> None:
    inputs = folder / "inputs.json"
    inputs.write_text(json.dumps({"name": "Bo", "times": 2}))
    code, out, _ = run_cli(capsys, "run", folder / "tiny.yaml", "--inputs-file", inputs, "--json")
    assert code == 0
    assert json.loads(out)["output"] == {"greeting": "hello Bo hello Bo", "size": 2}


def test_run_json_has_a_record_per_node(capsys: pytest.CaptureFixture[str], folder: Path) -> None:
    code, out, _ = run_cli(capsys, "run", folder / "tiny.yaml", "-i", "name=Ada", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["workflow"] == "tiny"
    assert data["status"] == "succeeded"
    assert data["output"] == {"greeting": "hello Ada", "size": 3}
    assert set(data["nodes"]) == {"hello", "size"}
    hello = data["nodes"]["hello"]
    assert (hello["kind"], hello["status"], hello["output"]) == ("tool", "succeeded", "hello Ada")
    assert hello["attempts"] == 1


def test_a_failing_tool_exits_1_and_keeps_the_independent_result(
    capsys: pytest.CaptureFixture[str], folder: Path
) -> None:
    code, out, _ = run_cli(capsys, "run", folder / "failing.yaml", "-i", "name=Ada", "--json")
    assert code == 1
    data = json.loads(out)
    assert data["status"] == "failed"
    assert data["output"] is None
    assert "cannot handle Ada" in data["error"]
    bad = data["nodes"]["bad"]
    assert (bad["status"], bad["error_type"]) == ("failed", "ToolError")
    assert data["nodes"]["size"]["status"] == "succeeded"
    assert data["nodes"]["size"]["output"] == 3


def test_a_failing_run_prints_the_error(capsys: pytest.CaptureFixture[str], folder: Path) -> None:
    code, out, err = run_cli(capsys, "run", folder / "failing.yaml", "-i", "name=Ada")
    assert code == 1
    assert "failing: failed" in out
    assert err.startswith("error: output needs node 'bad', which failed")
    assert "ValueError: cannot handle Ada" in err


def test_run_an_invalid_file_exits_2(capsys: pytest.CaptureFixture[str], folder: Path) -> None:
    code, out, err = run_cli(capsys, "run", folder / "invalid.yaml", "-i", "name=x")
    assert code == 2
    assert out == ""
    assert f"{folder / 'invalid.yaml'}:10: error:" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-i", "name"], "error: --input 'name': expected KEY=VALUE"),
        (["-i", "name=x", "-i", "nope=1"], "unknown input 'nope' (inputs: name, times)"),
        ([], "missing input 'name' (string)"),
        (["-i", "name=x", "-i", "times=many"], "input 'times' is invalid"),
    ],
)
def test_bad_inputs_exit_2(
    capsys: pytest.CaptureFixture[str], folder: Path, args: list[str], message: str
) -> None:
    code, out, err = run_cli(capsys, "run", folder / "tiny.yaml", *args)
    assert code == 2
    assert out == ""
    assert message in err


def test_a_missing_inputs_file_exits_2(capsys: pytest.CaptureFixture[str], folder: Path) -> None:
    missing = folder / "no.json"
    code, _, err = run_cli(capsys, "run", folder / "tiny.yaml", "--inputs-file", missing)
    assert code == 2
    assert "--inputs-file" in err


def test_bad_command_line_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"flowroute {fr.__version__}"


# -- the installed console script ------------------------------------------------------------


@pytest.mark.skipif(not CONSOLE_SCRIPT.exists(), reason="flowroute console script not installed")
def test_console_script_runs_a_workflow(folder: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(CONSOLE_SCRIPT), "run", str(folder / "failing.yaml"), "-i", "name=Ada", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr
    data = json.loads(proc.stdout)
    assert data["nodes"]["size"]["output"] == 3
    assert data["nodes"]["bad"]["status"] == "failed"
