"""A small MCP calculator server: arithmetic and unit conversion.

Run it over stdio (how `flowroute.tools.mcp.MCPServer.stdio` starts it):

    python examples/servers/calculator.py

or serve streamable HTTP on 127.0.0.1 (endpoint `http://127.0.0.1:PORT/mcp`):

    python examples/servers/calculator.py --http --port 8765
"""

from __future__ import annotations

import argparse
from typing import Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

mcp = MCPServer("calculator", instructions="Arithmetic and unit conversion.")

Unit = Literal["mm", "cm", "m", "km", "in", "ft", "mi", "mg", "g", "kg", "oz", "lb", "C", "F", "K"]

# factor to the base unit of each dimension (metre, gram)
_LENGTH = {
    "mm": 0.001,
    "cm": 0.01,
    "m": 1.0,
    "km": 1000.0,
    "in": 0.0254,
    "ft": 0.3048,
    "mi": 1609.344,
}
_MASS = {"mg": 0.001, "g": 1.0, "kg": 1000.0, "oz": 28.349523125, "lb": 453.59237}
_TEMPERATURE = ("C", "F", "K")


@mcp.tool()
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


@mcp.tool()
def multiply(a: float, b: float) -> float:
    """Multiply two numbers."""
    return a * b


@mcp.tool()
def divide(a: float, b: float) -> float:
    """Divide `a` by `b`. Dividing by zero is an error.

    `ToolError` (rather than, say, ValueError) sends its message to the client; other
    exceptions count as crashes and reach the client as a generic message.
    """
    if b == 0:
        raise ToolError("cannot divide by zero")
    return a / b


def _to_kelvin(value: float, unit: str) -> float:
    if unit == "C":
        return value + 273.15
    if unit == "F":
        return (value - 32) * 5 / 9 + 273.15
    return value


def _from_kelvin(value: float, unit: str) -> float:
    if unit == "C":
        return value - 273.15
    if unit == "F":
        return (value - 273.15) * 9 / 5 + 32
    return value


@mcp.tool()
def convert_units(value: float, from_unit: Unit, to_unit: Unit) -> float:
    """Convert a length, mass or temperature between units.

    Lengths: mm, cm, m, km, in, ft, mi. Masses: mg, g, kg, oz, lb. Temperatures: C, F, K.
    """
    for table in (_LENGTH, _MASS):
        if from_unit in table and to_unit in table:
            return value * table[from_unit] / table[to_unit]
    if from_unit in _TEMPERATURE and to_unit in _TEMPERATURE:
        return _from_kelvin(_to_kelvin(value, from_unit), to_unit)
    raise ToolError(f"cannot convert {from_unit} to {to_unit}: they measure different things")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", action="store_true", help="serve streamable HTTP, not stdio")
    parser.add_argument("--port", type=int, default=8765, help="HTTP port (with --http)")
    args = parser.parse_args(argv)
    if args.http:
        mcp.run("streamable-http", host="127.0.0.1", port=args.port)
    else:
        mcp.run()


if __name__ == "__main__":
    main()
