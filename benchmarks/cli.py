"""``clinicflow bench …``: one subcommand per benchmark, and ``all`` to run every one in turn.

Each benchmark module adds its own subcommand with ``add_parser(bench_subparsers)``; register it in
:data:`BENCHMARKS`. See benchmarks/README.md for what each measures and against which baseline.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import time

#: Benchmark modules (each exposes ``add_parser(subparsers)``).
BENCHMARKS = ("benchmarks.ingest", "benchmarks.optimize", "benchmarks.score", "benchmarks.train", "benchmarks.vitoria")


def _name(module: str) -> str:
    return module.rsplit(".", 1)[-1]


def cmd_all(args: argparse.Namespace) -> int:
    """Every benchmark at its default size, each in a process of its own (memory is measured per run)."""
    chosen = [_name(m) for m in BENCHMARKS if not args.only or _name(m) in args.only]
    unknown = sorted(set(args.only or ()) - {_name(m) for m in BENCHMARKS})
    if unknown:
        print(f"clinicflow bench all: unknown benchmark(s) {', '.join(unknown)}; "
              f"choose from {', '.join(_name(m) for m in BENCHMARKS)}", file=sys.stderr)
        return 2
    results: list[tuple[str, int, float]] = []
    for name in chosen:
        print(f"\n==> clinicflow bench {name}", flush=True)
        started = time.perf_counter()
        code = subprocess.call([sys.executable, "-m", "clinicflow", "bench", name])
        results.append((name, code, time.perf_counter() - started))
    print("\nbenchmark   exit   minutes")
    for name, code, seconds in results:
        print(f"{name:<11} {code:>4}   {seconds / 60:7.1f}")
    print("Each benchmark printed its figures above and wrote them as JSON under <CLINICFLOW_HOME>/bench/.")
    return max((code for _, code, _ in results), default=0)


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark (speed against a baseline measured in the same run)",
                       description="Benchmarks of ClinicFlow's stages at production scale; each compares against "
                       "a baseline measured in the same run. See benchmarks/README.md.")
    bench = p.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)
    every = bench.add_parser("all", help="run every benchmark at its default size, one after the other",
                             description="Runs ingest, optimize, score, train and vitoria in turn (about an hour "
                             "on 2 cores); vitoria reports that it skipped when the data set is absent.")
    every.add_argument("--only", nargs="+", metavar="NAME", help="only these benchmarks")
    every.set_defaults(handler=cmd_all)
    for name in BENCHMARKS:
        importlib.import_module(name).add_parser(bench)
