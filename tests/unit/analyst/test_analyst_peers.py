"""PeerDetector, specified: a device is judged against its kind's devices at its site."""

from __future__ import annotations

from fleetkit import drift, window

from pipeline.analyst.peers import PeerDetector, Profile
from pipeline.protocol import Aggregate

WARM = 300  # windows learned before the behaviour under test


def run(det: PeerDetector, first: int, last: int, **kw: object) -> list[dict[str, float]]:
    """Scores by device, window by window."""
    return [{s.device: s.score for s in det.update_group(window(i, **kw))} for i in range(first, last)]  # type: ignore[arg-type]


def test_a_probe_drifting_away_from_stable_peers_is_alerted() -> None:
    det = PeerDetector(step=0.1)
    run(det, 0, WARM)
    scores = run(det, WARM, WARM + 40, offset=drift("p3", WARM, 0.1))

    assert max(s["p3"] for s in scores) >= 0.8
    assert max(s[d] for s in scores for d in s if d != "p3") < 0.8


def test_a_change_of_the_whole_fleet_is_not_alerted() -> None:
    det = PeerDetector(step=0.1)
    run(det, 0, WARM)
    scores = run(det, WARM, WARM + 60, fleet=lambda i: 30.0 + (8.0 if i >= WARM else 0.0))

    assert max(max(s.values()) for s in scores) < 0.8  # nobody reaches the raise score


def test_a_device_that_always_reads_higher_than_its_peers_is_normal() -> None:
    det = PeerDetector(step=0.1)
    always_high = drift("p5", 0, 0.0)  # no drift: p5 always reads 1.0 above p0, its normal
    scores = run(det, 0, WARM + 60, offset=always_high)

    assert max(s["p5"] for s in scores[WARM:]) < 0.8


def test_a_held_device_is_not_scored_and_keeps_no_evidence() -> None:
    det = PeerDetector(step=0.1)
    run(det, 0, WARM)
    moving = drift("p3", WARM, 0.2)
    for i in range(WARM, WARM + 30):
        held = {s.device: s.score for s in det.update_group(window(i, offset=moving), hold={"p3"})}
        assert held["p3"] == 0.0
    # released once the value is back: the hold left nothing to raise on
    after = run(det, WARM + 30, WARM + 40)
    assert max(s["p3"] for s in after) < 0.5


def test_with_too_few_peers_nobody_is_scored() -> None:
    det = PeerDetector(step=0.1, min_peers=3)

    assert det.update_group(window(0, devices=3)) == []


def test_a_shelf_emptying_unlike_its_peers_is_alerted_but_a_top_up_is_not() -> None:
    det = PeerDetector(Profile("change", "down"), step=1.0)
    stock = {"kind": "smart_shelf", "metric": "stock", "noise": 0.4, "fleet": lambda i: 100.0 - 0.05 * i}
    run(det, 0, WARM, **stock)
    top_up = run(det, WARM, WARM + 20, offset=lambda d, i: 80.0 if d == "p1" and i >= WARM else 0.0, **stock)
    theft = run(det, WARM + 20, WARM + 30, offset=lambda d, i: 80.0 if d == "p1" else (-3.0 * (i - WARM - 19) if d == "p6" else 0.0), **stock)

    assert max(s["p1"] for s in top_up) < 0.5  # a rise of stock: restocked, not news
    assert max(s["p6"] for s in theft) >= 0.8  # three items a minute vanish from p6 alone


def test_with_days_a_difference_that_recurs_at_the_same_time_every_day_is_learned() -> None:
    det = PeerDetector(step=0.1, days=7)
    day = 1440

    def zone_waters(device: str, i: int) -> float:
        return 6.0 if device == "p2" and 270 <= i % day < 300 else 0.0  # 04:30-05:00 every day

    scores = run(det, 0, 3 * day, offset=zone_waters, noise=0.3)
    third_day = scores[2 * day :]

    assert max(s["p2"] for s in third_day) < 0.8
    first = run(PeerDetector(step=0.1), 0, day, offset=zone_waters)
    assert max(s["p2"] for s in first[WARM:]) >= 0.8  # without the days before, it stands out


def test_a_bad_profile_or_argument_is_refused() -> None:
    import pytest

    with pytest.raises(ValueError, match="profile"):
        PeerDetector(Profile("ratio"))
    with pytest.raises(ValueError):
        PeerDetector(slot_ms=7 * 60_000)  # does not divide a day


def test_a_non_finite_mean_is_left_out_of_the_window() -> None:
    det = PeerDetector(step=0.1)
    aggs = window(0)
    bad = Aggregate(1, "farm", "p99", "soil_probe", "moisture", aggs[0].start, aggs[0].end, 1, 0, 0, float("nan"), 0, 0, 0)

    assert "p99" not in {s.device for s in det.update_group([*aggs, bad])}
