"""How long `gts-bot --help` and `gts-bot check-config` take (prints figures; not a test).

    .venv/bin/python -m benchmarks.cli_startup [--runs 20]

Each command runs `--runs` times in a fresh interpreter (`python -m bot …`, a complete configuration from
GTS_BOT_* variables, in an empty temporary directory). Printed per command: median and slowest wall time,
and the median CPU time (user + system) of the child, which a loaded machine inflates less than wall time.
`python -c pass` is measured the same way as the floor no command can go below.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "gts-bot --help": ["-m", "bot", "--help"],
    "gts-bot check-config": ["-m", "bot", "check-config"],
}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(args: list[str], runs: int, cwd: str, env: dict[str, str]) -> tuple[list[float], list[float]]:
    walls: list[float] = []
    cpus: list[float] = []
    for _ in range(runs):
        cpu_before = _children_cpu()
        started = time.perf_counter()
        subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, check=True)
        walls.append(time.perf_counter() - started)
        cpus.append(_children_cpu() - cpu_before)
    return walls, cpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory(prefix="gts-bot-cli-bench-") as cwd:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GTS_BOT_")}
        env.update(
            GTS_BOT_MATRIX__HOMESERVER="https://matrix.test.org",
            GTS_BOT_MATRIX__USER_ID="@bot:test.org",
            GTS_BOT_MATRIX__PASSWORD="not-a-real-password",
            GTS_BOT_DATA_DIR=os.path.join(cwd, "data"),
        )
        print(f"{runs} runs each; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        for name, args in COMMANDS.items():
            walls, cpus = measure(args, runs, cwd, env)
            print(
                f"{name:22}  wall median {statistics.median(walls) * 1000:6.0f} ms, "
                f"max {max(walls) * 1000:6.0f} ms;  CPU median {statistics.median(cpus) * 1000:6.0f} ms"
            )


if __name__ == "__main__":
    main()
