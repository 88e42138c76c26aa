"""Hits, false alarms, FA/h and FRR on a hand-made timeline, every number worked out by hand in the comments."""

from __future__ import annotations

import numpy as np
import pytest

from kwsbench.stream.detector import DetectorSettings
from kwsbench.stream.matching import (
    Occurrence,
    SweepPoint,
    match,
    occurrences_by_keyword,
    operating_point,
    sweep,
)

TRUTH = [
    Occurrence(10.0, 11.0, "yes"),
    Occurrence(20.0, 21.0, "no"),
    Occurrence(30.0, 31.0, "yes"),
    Occurrence(40.0, 41.0, "_unknown_"),
]
DETECTIONS = [
    (10.6, "yes"),  # hit: yes@10
    (11.2, "yes"),  # a second detection of yes@10: false alarm
    (20.8, "yes"),  # wrong keyword inside no@20: false alarm
    (21.4, "no"),  # hit: no@20 (21.4 <= 21.0 + 0.5)
    (31.6, "yes"),  # past yes@30's tolerance (31.5): false alarm; yes@30 is missed
    (40.5, "no"),  # on an _unknown_ word: false alarm
    (50.0, "no"),  # in no occurrence: false alarm
    (9.9, "yes"),  # before yes@10 starts: false alarm
]


def test_matching_by_hand():
    times, keywords = zip(*DETECTIONS, strict=True)
    hit, false_alarm = match(times, keywords, TRUTH, tolerance_s=0.5)
    assert hit.tolist() == [True, True, False, False]
    assert false_alarm.tolist() == [False, True, True, False, True, True, True, True]
    # The order detections are given in does not matter: they are taken in time order.
    order = [7, 3, 1, 0, 6, 2, 5, 4]
    hit2, false_alarm2 = match([times[i] for i in order], [keywords[i] for i in order], TRUTH, 0.5)
    assert hit2.tolist() == hit.tolist() and false_alarm2.tolist() == [false_alarm[i] for i in order]
    # A wider tolerance turns 31.6 into the hit of yes@30.
    hit3, false_alarm3 = match(times, keywords, TRUTH, tolerance_s=0.7)
    assert hit3.tolist() == [True, True, True, False] and int(false_alarm3.sum()) == 5


def test_overlapping_occurrences_take_the_earliest_unmatched():
    truth = [Occurrence(0.0, 2.0, "yes"), Occurrence(1.0, 3.0, "yes")]
    hit, false_alarm = match([1.5, 1.6, 1.7], ["yes"] * 3, truth, 0.0)
    assert hit.tolist() == [True, True] and false_alarm.tolist() == [False, False, True]


def test_sweep_counts_and_rates_by_hand():
    # Hops of 100 ms: hop h ends at (h + 1) / 10 s. Scores put the best keyword at hops 105 (t = 10.6, yes),
    # 213 (t = 21.4, no, score 0.9) and 315 (t = 31.6, yes, 0.95).
    settings = DetectorSettings(hop_ms=100, refractory_ms=1000)
    scores = np.zeros(600)
    keyword_of_hop = ["yes"] * 600
    for hop, score, keyword in [(105, 0.8, "yes"), (213, 0.9, "no"), (315, 0.95, "yes")]:
        scores[hop], keyword_of_hop[hop] = score, keyword
    points = sweep(scores, keyword_of_hop, TRUTH, ["yes", "no"], settings, [0.5, 0.85, 0.92, 0.99], 0.5)
    # 0.5: all three fire; 10.6 hits yes@10, 21.4 hits no@20, 31.6 is a false alarm; yes@30 missed.
    # 0.85: 21.4 and 31.6 fire: yes@10 and yes@30 missed, one false alarm (yes).
    # 0.92: 31.6 only. 0.99: nothing: 3 misses, no false alarm.
    assert [(p.detections, p.false_alarms, p.missed) for p in points] == [
        (3, 1, 1),
        (2, 1, 2),
        (1, 1, 3),
        (0, 0, 3),
    ]
    assert points[0].false_alarms_by_keyword == {"yes": 1, "no": 0}
    assert points[1].missed_by_keyword == {"yes": 2, "no": 0}
    assert occurrences_by_keyword(TRUTH, ["yes", "no"]) == {"yes": 2, "no": 1}

    hours = 0.5  # 1 false alarm in half an hour is 2 FA/h
    at_2 = operating_point(points, hours, 2.0, occurrences=3)
    assert at_2["threshold"] == 0.5 and at_2["false_alarms_per_hour"] == 2.0
    assert at_2["false_rejection_rate"] == pytest.approx(1 / 3)
    at_1 = operating_point(points, hours, 1.0, occurrences=3)
    assert at_1["threshold"] == 0.99 and at_1["false_rejection_rate"] == 1.0 and at_1["false_alarms"] == 0
    no_keyword = operating_point(points, hours, 1.0, occurrences=1, keyword="no")
    # "no" never false-alarms: its best point is 0.5 (or 0.85), where no@20 is found; ties go to fewer FA,
    # then to the higher threshold.
    assert no_keyword["threshold"] == 0.85 and no_keyword["false_rejection_rate"] == 0.0


def test_an_unreachable_target_means_no_detection():
    points = [
        SweepPoint(0.5, 10, 8, 0, {"yes": 8}, {"yes": 0}),
        SweepPoint(0.9, 5, 4, 1, {"yes": 4}, {"yes": 1}),
    ]
    result = operating_point(points, hours=1.0, target_fa_per_hour=2.0, occurrences=4)
    assert result == {
        "target_false_alarms_per_hour": 2.0,
        "threshold": None,
        "false_alarms": 0,
        "false_alarms_per_hour": 0.0,
        "false_rejection_rate": 1.0,
    }
    assert operating_point(points, 1.0, 2.0, occurrences=0)["false_rejection_rate"] is None
