"""`--server daphne|uvicorn|both` for the benchmarks: which servers to run, in what order, and one table of
the runs' figures side by side, with the machine's load average at the start and end of each run."""

from __future__ import annotations

import argparse
import os
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SERVERS = ("daphne", "uvicorn")  # the order of `--server both` within a round


def add_server_arguments(parser: argparse.ArgumentParser, *, both: bool = True) -> None:
    choices = (*SERVERS, "both") if both else SERVERS
    parser.add_argument(
        "--server",
        choices=choices,
        default="uvicorn",
        help="the ASGI server to run the project with"
        + ("; both: each in turn (daphne, uvicorn, daphne, uvicorn... for --rounds), one table at the end"
           if both else ""),
    )  # fmt: skip
    if both:
        parser.add_argument("--rounds", type=int, default=1, help="runs of each server, interleaved")


def schedule(args: argparse.Namespace) -> list[tuple[str, int]]:
    """(server, round) for each run, in the order they run: the servers interleaved, round by round."""
    servers = SERVERS if args.server == "both" else (args.server,)
    return [(server, round_) for round_ in range(1, getattr(args, "rounds", 1) + 1) for server in servers]


def load1() -> float:
    return os.getloadavg()[0]


def load_text() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


@dataclass
class Run:
    """One run's figures, by label, in the order added: (value for the median, format of the value)."""

    server: str
    round: int
    load_start: float = field(default_factory=load1)
    load_end: float = float("nan")
    started: float = field(default_factory=time.monotonic)
    seconds: float = float("nan")
    error: str = ""
    figures: dict[str, tuple[float | str, str]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.server} #{self.round}"

    def add(self, label: str, value: float | str, fmt: str = "{}") -> None:
        """A figure for the table: `fmt` formats `value` (e.g. "{:.1f} ms" with value in ms)."""
        self.figures[label] = (value, fmt)

    def end(self) -> None:
        self.load_end = load1()
        self.seconds = time.monotonic() - self.started


def run_all(
    args: argparse.Namespace, body: Callable[[str, Run], None], *, title: str, exit_on_failure: bool = True
) -> list[Run]:
    """Call `body(server, run)` for each scheduled run (a failed run is reported and the next one goes on),
    then print the table of all runs. Returns the runs; exits with status 1 after the table if any failed
    (or leaves that to the caller: `exit_on_failure` False)."""
    runs = []
    plan = schedule(args)
    for number, (server, round_) in enumerate(plan, 1):
        run = Run(server, round_)
        print(f"\n===== run {number}/{len(plan)}: {server}, round {round_}; load average {load_text()} =====\n")
        try:
            body(server, run)
        except Exception as exc:  # reported, and the other runs still go on
            traceback.print_exc()
            run.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:60]
        run.end()
        print(f"\n(run {number}: {run.seconds:.0f} s; load average at the end {load_text()})", flush=True)
        runs.append(run)
    print_table(runs, title)
    if exit_on_failure and (failed := [run.name for run in runs if run.error]):
        raise SystemExit(f"failed runs: {', '.join(failed)}")
    return runs


def print_table(runs: list[Run], title: str) -> None:
    labels: list[str] = ["1-min load average, start", "1-min load average, end", "run time"]
    for run in runs:
        run.figures = {
            "1-min load average, start": (run.load_start, "{:.2f}"),
            "1-min load average, end": (run.load_end, "{:.2f}"),
            "run time": (run.seconds, "{:.0f} s"),
            **({"FAILED": (run.error, "{}")} if run.error else {}),
            **run.figures,
        }
        labels += [label for label in run.figures if label not in labels]
    columns = [run.name for run in runs]
    cells = [[_cell(run, label) for run in runs] for label in labels]
    servers = list(dict.fromkeys(run.server for run in runs))
    if any(sum(run.server == server for run in runs) > 1 for server in servers):
        columns += [f"{server} median" for server in servers]
        for row, label in zip(cells, labels, strict=True):
            row += [_median(runs, server, label) for server in servers]
    label_width = max(len(label) for label in labels)
    widths = [max(len(column), *(len(row[i]) for row in cells)) for i, column in enumerate(columns)]
    print(f"\n{title}")
    print(f"{'':<{label_width}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True)))
    for label, row in zip(labels, cells, strict=True):
        print(f"{label:<{label_width}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(row, widths, strict=True)))


def _cell(run: Run, label: str) -> str:
    if label not in run.figures:
        return "-"
    value, fmt = run.figures[label]
    return fmt.format(value)


def _median(runs: list[Run], server: str, label: str) -> str:
    values = [run.figures[label] for run in runs if run.server == server and label in run.figures]
    numbers = [value for value, _ in values if isinstance(value, int | float) and not isinstance(value, bool)]
    if not numbers or len(numbers) != len(values):
        return "-"
    return values[0][1].format(statistics.median(numbers))


def per_run(path: str, args: argparse.Namespace, run: Run) -> str:
    """`path` for a file a run writes (a py-spy profile): with several runs, one file each."""
    if len(schedule(args)) == 1:
        return path
    file = Path(path)
    return str(file.with_name(f"{file.stem}-{run.server}-{run.round}{file.suffix}"))
