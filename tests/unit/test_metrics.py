"""The one top-N cap: kept by key, the rest summed under <other>, what was left out counted."""

from __future__ import annotations

from exporter.metrics import OTHER, Caps, Family

HITS = Family("test_caps_hits", "gauge", "Hits per source.", ("source",))


def test_top_keeps_n_sums_the_rest_and_counts_what_it_left_out() -> None:
    caps = Caps("unit", "t1")
    series = HITS.new()
    items = {"a": 5.0, "b": 9.0, "c": 1.0, "d": 7.0}.items()
    top = caps.top(HITS, items, 2, lambda kv: (-kv[1], kv[0]))
    top.add(series, lambda kv: [kv[0]], lambda kv: kv[1], other=[OTHER])
    assert [(s.labels["source"], s.value) for s in series.samples] == [("b", 9.0), ("d", 7.0), (OTHER, 6.0)]
    capped = {s.labels["family"]: s.value for s in caps.series().samples}
    assert capped == {"test_caps_hits": 2.0}


def test_several_keys_keep_the_union_and_caps_add_up_over_targets() -> None:
    caps = Caps("unit", "t1")
    # (failures, accounts): "spray" has few failures but many accounts, and is kept by the second key.
    items = [("noisy", (50, 1)), ("spray", (3, 40)), ("quiet", (2, 1)), ("other", (4, 2))]
    top = caps.top(HITS, items, 1, lambda kv: -kv[1][0], lambda kv: -kv[1][1])
    assert [name for name, _ in top.kept] == ["noisy", "spray"]
    assert [name for name, _ in top.rest] == ["other", "quiet"]
    caps.top(HITS, [("x", (1, 1)), ("y", (2, 2))], 1, lambda kv: -kv[1][0])
    assert caps.dropped == {"test_caps_hits": 3}


def test_a_cap_that_left_nothing_out_still_reports_zero() -> None:
    caps = Caps("unit", "t1")
    caps.note(HITS)
    top = caps.top(HITS, [], 5, lambda kv: kv)
    assert top.kept == [] and top.rest == []
    assert [(s.labels, s.value) for s in caps.series().samples] == [
        ({"collector": "unit", "target": "t1", "family": "test_caps_hits"}, 0.0)
    ]
