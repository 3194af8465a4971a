"""Each outside input fuzzed with a bounded number of examples (``./run.sh bench fuzz`` runs a million), plus the
inputs the fuzzer once broke a parser with, replayed every time."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings

from tests.fuzz_targets import Target, targets

TARGETS = targets()


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_only_the_result_or_the_declared_error_comes_out(target: Target) -> None:
    run = given(target.strategy)(target.check)
    for case in target.regressions:
        run = example(case)(run)
    settings(
        max_examples=target.examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )(run)()
