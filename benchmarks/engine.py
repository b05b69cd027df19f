"""Engine benchmark: parallel speed-up and per-node scheduling overhead, as ratios from one run.

    python benchmarks/engine.py [--nodes 200] [--delay 0.05]

Machines here are noisy: compare the ratios printed by one run, never absolute times across runs.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import anyio

import flowroute as fr


def fan_out(n: int, delay: float) -> fr.Workflow[Any]:
    @fr.tool
    async def work(i: int) -> int:
        if delay:
            await anyio.sleep(delay)
        return i

    @fr.tool
    def total(values: list[int]) -> int:
        return sum(values)

    @fr.workflow
    def wf(xs: list[int]) -> int:
        return total(fr.map(work, xs, concurrency=n))

    return wf  # type: ignore[no-any-return]


def chain(n: int) -> fr.Workflow[Any]:
    @fr.tool
    async def step(x: int) -> int:
        return x + 1

    @fr.workflow
    def wf(x: int) -> int:
        h = step(x)
        for _ in range(n - 1):
            h = step(h)
        return h  # type: ignore[no-any-return]

    return wf  # type: ignore[no-any-return]


def wide(n: int, delay: float) -> fr.Workflow[Any]:
    @fr.tool
    async def work(i: int) -> int:
        await anyio.sleep(delay)
        return i

    @fr.workflow
    def wf() -> dict[str, Any]:
        return {f"n{i}": work(i) for i in range(n)}

    return wf  # type: ignore[no-any-return]


def timed(wf: fr.Workflow[Any], options: fr.RunOptions | None = None, **inputs: Any) -> float:
    start = time.perf_counter()
    result = wf.run(options, **inputs)
    elapsed = time.perf_counter() - start
    assert result.ok, result.error
    return elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--nodes", type=int, default=200)
    p.add_argument("--delay", type=float, default=0.05)
    a = p.parse_args()
    n, d = a.nodes, a.delay

    timed(wide(2, 0.0))  # first run imports the event loop backend: keep it out of the figures
    serial_ideal = n * d
    unlimited = fr.RunOptions(max_concurrency=n)
    t_wide_default = timed(wide(n, d))
    t_wide = timed(wide(n, d), unlimited)
    t_map = timed(fan_out(n, d), xs=list(range(n)))
    t_chain = timed(chain(n), x=0)
    t_empty = timed(wide(n, 0.0), unlimited)

    print(f"| measure ({n} nodes, {d * 1000:.0f} ms of work each) | value |")
    print("|---|---|")
    print(
        f"| {n} independent nodes, default max_concurrency=16: serial work / wall time | "
        f"{serial_ideal / t_wide_default:.1f}x |"
    )
    print(
        f"| {n} independent nodes, max_concurrency={n}: serial work / wall time | "
        f"{serial_ideal / t_wide:.1f}x |"
    )
    print(f"| map over {n} items: serial work / wall time | {serial_ideal / t_map:.1f}x |")
    print(
        f"| wall time / ideal ({d * 1000:.0f} ms) for {n} independent nodes | {t_wide / d:.2f}x |"
    )
    print(
        f"| scheduling overhead per node, {n} no-op nodes in parallel | "
        f"{t_empty / n * 1e6:.0f} us |"
    )
    print(
        f"| scheduling overhead per node, chain of {n} dependent no-op nodes | "
        f"{t_chain / n * 1e6:.0f} us |"
    )


if __name__ == "__main__":
    main()
