"""Every outside input fuzzed at scale: the properties of tests/fuzz_targets.py, a million generated cases in all.

    python -m bench fuzz [--cases 1000000] [--workers 2] [--only NAME ...]

The suite runs each property with a few dozen examples; this runs the same properties until the case budget is
spent, shared between the targets by their weight in the suite, on as many processes as there are cores. Each
case is drawn from random bytes, and a failure is searched for again and shrunk by hypothesis, then printed with
its minimal input: fix the parser, then keep the input in the
target's ``regressions`` so the suite replays it. Prints cases, seconds and cases/s per target and in all, and
the budget met (cases / budget).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.fuzz_targets import Target

BUFFER_SIZES = (64, 256, 1024, 4096)  # random bytes hypothesis draws a case from: small ones give small cases
SHRINK_EXAMPLES = 20_000


@dataclass
class Outcome:
    name: str
    cases: int
    seconds: float
    failure: str = ""


def _run_target(job: tuple[str, int, int]) -> Outcome:
    """Hypothesis draws each case from random bytes (its fuzz_one_input, as under an external fuzzer): no engine
    bookkeeping per case, so several times the cases a second of @given; a failure is then shrunk with @given."""
    from hypothesis import HealthCheck, given, settings

    from tests.fuzz_targets import targets

    name, budget, first_seed = job
    target = next(t for t in targets() if t.name == name)
    rng = random.Random(first_seed)
    cases, failing, last = 0, None, None

    def counted(value: object) -> None:
        nonlocal cases, last
        cases += 1
        last = value
        target.check(value)

    run = settings(database=None, deadline=None, suppress_health_check=list(HealthCheck))(
        given(target.strategy)(counted)
    )
    started = time.perf_counter()
    while cases < budget:
        buffer = rng.randbytes(rng.choice(BUFFER_SIZES))
        try:
            run.hypothesis.fuzz_one_input(buffer)  # type: ignore[attr-defined]
        except Exception as exc:  # the property failed on this case
            failing = f"{type(exc).__name__}: {exc}\non: {last!r}"[:3000]
            break
    seconds = time.perf_counter() - started
    if failing is None:
        return Outcome(name, cases, seconds)
    return Outcome(name, cases, seconds, f"{failing}\n\nshrunk by hypothesis:\n{_shrunk(target)}")


def _shrunk(target: Target) -> str:
    """The failure hypothesis finds and shrinks on its own, for the report."""
    from hypothesis import HealthCheck, given, settings

    quiet = settings(
        max_examples=SHRINK_EXAMPLES,
        database=None,
        deadline=None,
        print_blob=False,
        suppress_health_check=list(HealthCheck),
    )
    run = quiet(given(target.strategy)(target.check))
    try:
        run()
    except Exception as exc:
        parts = list(getattr(exc, "exceptions", [])) or [exc]  # an ExceptionGroup: each distinct failure
        return "\n".join(
            f"{type(e).__name__}: {e}\n" + "\n".join(getattr(e, "__notes__", []))[:3000] for e in parts[:4]
        )
    return "failed once under fuzz_one_input; hypothesis did not find it again in its own search"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench fuzz")
    parser.add_argument("--cases", type=int, default=1_000_000, help="generated cases in all")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--only", nargs="*", default=[], help="target names (default: all)")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args(argv)

    from tests.fuzz_targets import targets

    chosen = [t for t in targets() if not args.only or t.name in args.only]
    if not chosen:
        print(f"no target named {args.only}", file=sys.stderr)
        return 2
    weight = sum(t.examples for t in chosen)
    jobs = [(t.name, max(1, args.cases * t.examples // weight), args.seed + 1000 * i) for i, t in enumerate(chosen)]
    jobs.sort(key=lambda job: -job[1])
    print(f"fuzz: {len(jobs)} targets, {args.cases:,} cases, {args.workers} workers, seed {args.seed}", flush=True)
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        outcomes = []
        for outcome in pool.imap_unordered(_run_target, jobs):
            outcomes.append(outcome)
            state = "FAILED" if outcome.failure else "ok"
            print(f"  {outcome.name:<24} {outcome.cases:>9,} cases {outcome.seconds:7.1f} s  {state}", flush=True)
    wall = time.perf_counter() - started
    total = sum(o.cases for o in outcomes)
    cpu = sum(o.seconds for o in outcomes)
    print()
    print(f"{'target':<24} {'cases':>10} {'seconds':>8} {'cases/s':>9}  result")
    for o in sorted(outcomes, key=lambda o: o.name):
        rate = o.cases / o.seconds if o.seconds else 0.0
        print(f"{o.name:<24} {o.cases:>10,} {o.seconds:>8.1f} {rate:>9,.0f}  {'FAILED' if o.failure else 'ok'}")
    print(f"{'all':<24} {total:>10,} {cpu:>8.1f} {total / cpu if cpu else 0:>9,.0f}  (per core)")
    print(f"wall {wall:.1f} s on {args.workers} workers: {total / wall:,.0f} cases/s")
    print(f"budget: {total:,} / {args.cases:,} cases = {total / args.cases:.2f}")
    failed = [o for o in outcomes if o.failure]
    for o in failed:
        print(f"\n--- {o.name} failed after {o.cases:,} cases ---\n{o.failure}")
    print(f"\nfailures: {len(failed)}")
    return 1 if failed or total < args.cases else 0
