"""Property tests of the KL schedules (range, monotonicity, cyclical period)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from seqvae.testing import build_component

totals = st.integers(min_value=1, max_value=200_000)
fractions = st.floats(min_value=0.0, max_value=1.0)


def step_pair(total):
    return st.tuples(st.integers(0, total), st.integers(0, total)).map(sorted)


@given(value=st.floats(0, 10), step=st.integers(0, 10**6), total=totals)
def test_constant_is_constant(value, step, total):
    assert build_component("schedule", "constant", value=value)(step, total) == value


@given(total=totals, start=st.floats(0, 0.5), stop=st.floats(0.5, 2), data=st.data())
def test_linear_in_range_and_monotone(total, start, stop, data):
    s = build_component("schedule", "linear", start=start, stop=stop)
    a, b = data.draw(step_pair(total))
    assert start - 1e-12 <= s(a, total) <= s(b, total) <= stop + 1e-12
    assert s(0, total) == start
    assert math.isclose(s(total, total), stop)


@given(total=totals, data=st.data(), k=st.none() | st.floats(1e-5, 1.0), x0=st.none() | st.floats(0, 1e5))
def test_sigmoid_in_range_and_monotone(total, data, k, x0):
    s = build_component("schedule", "sigmoid", k=k, x0=x0)
    a, b = data.draw(step_pair(total))
    assert 0.0 <= s(a, total) <= s(b, total) <= 1.0


def test_sigmoid_matches_bowman_values():
    s = build_component("schedule", "sigmoid", k=0.0025, x0=2500)
    got = [round(s(t, 10_000), 3) for t in (0, 1000, 2500, 4000, 5000)]
    assert got == [0.002, 0.023, 0.5, 0.977, 0.998]


@given(cycles=st.integers(1, 10), period=st.integers(2, 500), ratio=st.floats(0.05, 1.0), data=st.data())
def test_cyclical_period_and_shape(cycles, period, ratio, data):
    total = cycles * period
    s = build_component("schedule", "cyclical", n_cycles=cycles, ratio=ratio)
    t = data.draw(st.integers(0, total - period - 1)) if cycles > 1 else 0
    if cycles > 1:
        assert math.isclose(s(t, total), s(t + period, total), abs_tol=1e-9)  # periodic
    assert s(0, total) == 0.0 and s(period * (cycles - 1), total) == 0.0  # each cycle restarts
    assert math.isclose(s(period - 1, total), 1.0) or (period - 1) / period < ratio
    within = [s(u, total) for u in range(0, period)]
    assert all(0.0 <= v <= 1.0 for v in within)
    assert all(x <= y for x, y in zip(within, within[1:]))  # rises, then holds, within a cycle
