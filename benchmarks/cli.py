"""``clinicflow bench …``: one subcommand per benchmark. Each benchmark module adds its own with
``add_parser(bench_subparsers)``; register it in :data:`BENCHMARKS`."""

from __future__ import annotations

import argparse
import importlib

#: Benchmark modules (each exposes ``add_parser(subparsers)``).
BENCHMARKS = ("benchmarks.ingest", "benchmarks.optimize", "benchmarks.score", "benchmarks.train", "benchmarks.vitoria")


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark (speed against a baseline measured in the same run)")
    bench = p.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)
    for name in BENCHMARKS:
        importlib.import_module(name).add_parser(bench)
