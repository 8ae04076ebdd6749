"""pinapp run for real on the local stack, for the integration tests and the benchmarks."""

from pinapp.tools.harness.pipeline import TABLE_OF, Pipeline
from pinapp.tools.harness.processes import REPO, WorkerProcess, cli_entry, free_port, in_netns
from pinapp.tools.harness.steps import assert_clean, placeable_repins, start, traffic, wait_for

__all__ = [
    "REPO",
    "TABLE_OF",
    "Pipeline",
    "WorkerProcess",
    "assert_clean",
    "cli_entry",
    "free_port",
    "in_netns",
    "placeable_repins",
    "start",
    "traffic",
    "wait_for",
]
