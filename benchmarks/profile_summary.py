"""Where a driver's CPU went: a summary of the py-spy profiles ``trigger_scale.py --profile DIR`` writes.

Only the samples taken while the waiters ran count: imports and set-up (stacks from the driver's
module level that are not inside ``asyncio.run``) are left out; greenback's trampolines (the
triggerer runs each trigger in a greenback portal, whose stacks start there) and threads are kept.
Profiles are recorded with ``--gil``, so a sample is Python holding the GIL: CPU, not waiting.

For each profile it prints the share of samples by package (the innermost frame outside the
standard library decides), the hottest functions (inclusive, summed over their lines) and the
hottest lines, inclusive and self.

``python benchmarks/profile_summary.py /tmp/profiles/poll-1000.txt [--top 25] [--match noxus]``
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

FRAME_LINE = re.compile(r":\d+\)$")
DRIVER_MODULE_FRAME = "<module> (trigger_driver.py"
EVENT_LOOP_FRAME = "run (asyncio/runners.py"
OWNERS = (
    ("airflow_provider_noxus/", "airflow_provider_noxus"),
    ("aiohttp/", "aiohttp"),
    ("yarl/", "yarl"),
    ("multidict/", "multidict"),
    ("tenacity/", "tenacity"),
    ("greenback/", "greenback"),
    ("airflow/providers/http/", "providers-http"),
    ("airflow/", "airflow"),
    ("structlog/", "structlog"),
    ("logging/", "logging (stdlib)"),
    ("json/", "json (stdlib)"),
    ("asyncio/", "asyncio (stdlib)"),
    ("trigger_driver.py", "benchmark driver"),
)


def is_measured(stack: str) -> bool:
    """Whether a sample was taken while the waiters ran (not during imports and set-up)."""
    return not stack.startswith(DRIVER_MODULE_FRAME) or EVENT_LOOP_FRAME in stack


def owner(frame: str) -> str:
    for needle, name in OWNERS:
        if needle in frame:
            return name
    return "other"


def summarize(path: Path, top: int, match: str | None) -> str:
    """The report of one profile file."""
    inclusive: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    own: Counter[str] = Counter()
    by_owner: Counter[str] = Counter()
    measured = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit() or not is_measured(stack):
            continue
        count = int(count_text)
        measured += count
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] += count
        for function in {FRAME_LINE.sub(")", frame) for frame in frames}:
            functions[function] += count
        own[frames[-1]] += count
        deciding = next(
            (frame for frame in reversed(frames) if owner(frame) not in ("asyncio (stdlib)", "other")),
            frames[-1],
        )
        by_owner[owner(deciding)] += count
    if not measured:
        return f"{path.name}: no sample of the measured span"
    lines = [f"{path.name}: {measured} samples while waiting"]
    lines.append("  by package (innermost non-stdlib frame):")
    lines += [f"    {share / measured:6.1%}  {name}" for name, share in by_owner.most_common()]

    def hottest(counter: Counter[str], title: str) -> None:
        lines.append(f"  hottest {title}:")
        shown = 0
        for frame, share in counter.most_common():
            if match and match not in frame:
                continue
            if not match and owner(frame) == "benchmark driver":
                continue
            lines.append(f"    {share / measured:6.1%}  {frame}")
            shown += 1
            if shown >= top:
                break

    hottest(functions, "functions, inclusive")
    hottest(inclusive, "lines, inclusive")
    hottest(own, "lines, self")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profiles", type=Path, nargs="+")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match", help="only lines whose frame contains this text")
    args = parser.parse_args(argv)
    for path in args.profiles:
        print(summarize(path, args.top, args.match))
    return 0


if __name__ == "__main__":
    sys.exit(main())
