"""The decaying top-k memory: keeps the k largest, forgets them at a rate, survives renormalising."""

from __future__ import annotations

import pytest

from pipeline.learn.memory import RENORMALISE_AT, DecayingTopK


def test_it_keeps_the_k_largest_values() -> None:
    m = DecayingTopK(3)
    for v in (5.0, 1.0, 9.0, 3.0, 7.0):
        m.add(v)
    assert sorted(m.heap) == [5.0, 7.0, 9.0]
    assert (m.kth(), m.largest(), len(m)) == (5.0, 9.0, 3)


def test_kth_when_full_is_zero_until_k_values_are_remembered() -> None:
    m = DecayingTopK(3)
    m.add(4.0)
    assert (m.kth(), m.kth_when_full()) == (4.0, 0.0)


def test_decay_shrinks_what_is_remembered_and_new_values_count_at_full_size() -> None:
    m = DecayingTopK(2)
    m.add(10.0)
    m.add(8.0)
    m.decay(2.0)
    assert (m.kth(), m.largest()) == (4.0, 5.0)
    m.add(6.0)  # now larger than the forgotten 4.0
    assert (m.kth(), m.largest()) == (5.0, 6.0)


def test_renormalising_keeps_the_values_and_returns_the_divisor() -> None:
    m = DecayingTopK(2)
    m.add(3.0)
    growth = 1e10
    divisors = [m.decay(growth) for _ in range(16)]
    assert m.scale <= RENORMALISE_AT
    assert any(divisors) and all(d == 0.0 or d > RENORMALISE_AT for d in divisors)
    assert m.kth() == pytest.approx(3.0 / growth**16, rel=1e-9)


def test_discard_and_reset() -> None:
    m = DecayingTopK(3)
    for v in (1.0, 2.0, 3.0):
        m.add(v)
    assert m.discard_scaled(2.0) and not m.discard_scaled(2.5)
    assert sorted(m.heap) == [1.0, 3.0]
    m.reset([4.0, 2.0])
    assert (m.heap, m.scale) == ([2.0, 4.0], 1.0)


def test_k_must_be_positive() -> None:
    with pytest.raises(ValueError, match="k must be at least 1"):
        DecayingTopK(0)
