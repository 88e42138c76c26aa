"""Verdicts on the hand-written fixture (see conftest.py for why each is what it is), and the accuracy rule
on and off the paper's protocol."""

from __future__ import annotations

import dataclasses
import math

from report_records import LABELS, RECIPE, trial, write_jsonl
from scipy import stats as scipy_stats

from kwsbench.report.claims import (
    ACCURACY_TOLERANCE_PP,
    PAPER_PROTOCOL,
    PAPER_RECIPE,
    TEST_SPLITS,
    evaluate_claims,
)
from kwsbench.report.stats import CONTRADICTED, NOT_COMPARABLE, SUPPORTED, UNDECIDED, paired_test
from kwsbench.report.trials import load_trials

S, C, U, N = SUPPORTED, CONTRADICTED, UNDECIDED, NOT_COMPARABLE


def _results(path):
    trial_set = load_trials([path])
    names = {c: trial_set.context_name(c) for c in trial_set.contexts}
    return trial_set, evaluate_claims(trial_set.trials, names)


def test_fixture_gives_the_expected_verdict_for_every_claim_it_touches(fixture_records):
    _, results = _results(fixture_records)
    assert {r.claim: r.verdict for r in results} == {
        "params:bcresnet_1": S,  # 9,232 exactly
        "macs_total:bcresnet_1": S,  # 3.11 M against 3.1 M: +0.48 %
        "params:bcresnet_1_5": S,
        "macs_total:bcresnet_1_5": S,
        "params:table2_attention": S,
        "macs_total:table2_attention": S,
        "params:table2_no_shortcut": C,  # 9,500 against 9.2k: +3.3 % > 1 %
        "macs_total:table2_no_shortcut": S,
        "params:table2_no_ssn": S,  # 7,760 against 7.8k: -0.51 %
        "macs_total:table2_no_ssn": S,
        "params:table2_freq_maxpool": S,
        "macs_total:table2_freq_maxpool": N,  # fvcore does not count max pooling
        "params:tcresnet14_1_5": S,
        "macs_conv:tcresnet14_1_5": S,
        "params:bcresnet_1:below": S,
        "ratio:bcresnet_1:tcresnet14_1_5": S,
        "beats:table2_no_ssn": S,
        "beats:table2_attention": U,
        "beats:table2_no_shortcut": C,
        "beats:table2_freq_maxpool": U,
        "grows:tau": S,
        "accuracy:bcresnet_1": N,
        "accuracy:bcresnet_1_5": N,
        "accuracy:tcresnet14_1_5": N,
        "accuracy:table2_attention": N,
        "accuracy:table2_no_shortcut": N,
        "accuracy:table2_no_ssn": N,
        "accuracy:table2_freq_maxpool": N,
    }


def test_ordering_evidence_names_the_test_the_p_value_the_interval_and_the_seeds(fixture_records):
    _, results = _results(fixture_records)
    by_id = {r.claim: r for r in results}
    ssn = by_id["beats:table2_no_ssn"]
    # Differences 0.02 0.025 0.02 0.025: mean 0.0225, sd 0.0025 * sqrt(4/3), t = mean / (sd / 2).
    sd = 0.0025 * math.sqrt(4 / 3)
    t = 0.0225 / (sd / 2)
    p = 2 * scipy_stats.t.sf(t, df=3)
    half = scipy_stats.t.ppf(0.975, df=3) * sd / 2
    assert f"p = {p:.3g}" in ssn.evidence
    assert f"[{(0.0225 - half) * 100:+.2f}, {(0.0225 + half) * 100:+.2f}]" in ssn.evidence
    assert "n = 4 seeds" in ssn.evidence and "Wilcoxon p = 0.125" in ssn.evidence  # 2 / 2**4
    assert f"d_z = {0.0225 / sd:.2f}" in ssn.evidence
    assert ssn.measured == "91.50 ± 1.29 vs 89.25 ± 1.04"
    assert "too few matched seeds (2" in by_id["beats:table2_freq_maxpool"].evidence
    assert "not significant" in by_id["beats:table2_attention"].evidence
    assert "the opposite holds" in by_id["beats:table2_no_shortcut"].evidence
    assert "tau 1.0 → 1.5: supported" in by_id["grows:tau"].evidence
    mini = by_id["accuracy:bcresnet_1"].evidence
    assert "not Google Speech Commands" in mini and "epochs 60 (paper: 200)" in mini


def test_paired_test_against_a_hand_computation():
    # Relative 1e-9 for the mean and sd (float64 sums of four decimals: rounding only); 1e-6 for t, which
    # scipy computes from the unrounded differences (a few ulps of 0.0025 each, amplified 1/sd-fold).
    test = paired_test([0.90, 0.92, 0.91, 0.93], [0.88, 0.895, 0.89, 0.905])
    sd = 0.0025 * math.sqrt(4 / 3)
    assert test.n == 4
    assert math.isclose(test.mean_diff, 0.0225, rel_tol=1e-9)
    assert math.isclose(test.std_diff, sd, rel_tol=1e-9)
    assert math.isclose(test.t_statistic, 0.0225 / (sd / 2), rel_tol=1e-6)
    assert test.verdict()[0] == SUPPORTED
    # Swapping the sides reverses the verdict, not the p-value.
    reverse = paired_test([0.88, 0.895, 0.89, 0.905], [0.90, 0.92, 0.91, 0.93])
    assert reverse.verdict()[0] == CONTRADICTED and math.isclose(reverse.p_t, test.p_t)


def test_one_seed_or_identical_differences_never_decide():
    assert paired_test([0.99], [0.10]).verdict()[0] == UNDECIDED
    # Two pairs are below the minimum even when the t-test alone would call them significant.
    assert paired_test([0.99, 0.98], [0.10, 0.11]).verdict() == (
        UNDECIDED,
        "too few matched seeds (2; at least 3 needed)",
    )
    same = paired_test([0.93, 0.95, 0.94], [0.90, 0.92, 0.91])
    assert same.verdict()[0] == UNDECIDED and "same amount" in same.verdict()[1]
    assert paired_test([0.9, 0.9, 0.9], [0.9, 0.9, 0.9]).verdict()[0] == UNDECIDED


def _gsc_trials(tmp_path):
    """Trials on the full GSC v2 protocol in everything kwsbench can record (dataset, classes, recipe)."""
    dataset = {"dataset": "speech_commands", "data_dir": "/data/sc2", "protocol": "12", "keywords": None,
               "noise_dir": None, "version": "v2", "skip_bad": False, "fractions": [0.8, 0.1, 0.1]}  # fmt: skip
    recipe = {**RECIPE, **PAPER_RECIPE}
    records = []
    for model, finals in (
        ("bcresnet_1", [0.968, 0.970, 0.966]),  # 96.8 against 96.9: inside 0.5 pp
        ("table2_no_ssn", [0.950, 0.951, 0.949]),  # 95.0 against 96.5: 1.5 pp off
        ("bcresnet_1_5", [0.96, 0.98, 0.97]),  # 97.0 against 97.6: outside 0.5 pp, inside 2 SE = 1.15 pp
        ("bcresnet_3", [0.98, 0.98, 0.98]),
        ("matchboxnet_6x2x64", [0.97, 0.97, 0.97]),
    ):
        for seed, final in enumerate(finals):
            records.append(trial(model, seed, final, dataset=dataset, recipe=recipe, labels=LABELS))
    return write_jsonl(tmp_path / "gsc.jsonl", records)


def test_accuracies_are_compared_only_on_the_papers_test_set(tmp_path):
    trial_set = load_trials([_gsc_trials(tmp_path)])
    names = {c: trial_set.context_name(c) for c in trial_set.contexts}
    results = [r for r in evaluate_claims(trial_set.trials, names) if r.kind == "accuracy"]
    # kwsbench's protocol 12 tests on testing_list.txt; the paper on the separately released test set.
    assert {r.verdict for r in results} == {NOT_COMPARABLE}
    assert all(r.evidence == "tested on testing_list.txt of the training archive, the paper on the "
               "separately released official test set" for r in results)  # fmt: skip
    ordering = [r for r in evaluate_claims(trial_set.trials, names) if r.claim == "beats:matchboxnet_6x2x64"]
    assert [r.verdict for r in ordering] == [NOT_COMPARABLE]

    # The comparison itself, on a protocol whose test split these trials do have.
    same_split = dataclasses.replace(PAPER_PROTOCOL, test_split=TEST_SPLITS[("speech_commands", "12")])
    results = {
        r.claim: r for r in evaluate_claims(trial_set.trials, names, same_split) if r.kind == "accuracy"
    }
    assert results["accuracy:bcresnet_1"].verdict == SUPPORTED
    assert f"tolerance ±{ACCURACY_TOLERANCE_PP:.2f} pp" in results["accuracy:bcresnet_1"].evidence
    assert results["accuracy:table2_no_ssn"].verdict == CONTRADICTED
    assert "-1.50 pp from 96.5" in results["accuracy:table2_no_ssn"].evidence
    # std 1 pp over 3 seeds, no std in Table 3: tolerance 2 * 1 / sqrt(3) = 1.15 pp.
    wide = results["accuracy:bcresnet_1_5"]
    assert wide.verdict == SUPPORTED and f"±{2 / math.sqrt(3):.2f} pp" in wide.evidence
    # The full-protocol ordering is then tested: identical accuracies on 3 seeds decide nothing.
    ordering = [
        r
        for r in evaluate_claims(trial_set.trials, names, same_split)
        if r.claim == "beats:matchboxnet_6x2x64"
    ]
    assert [r.verdict for r in ordering] == [UNDECIDED]


def test_counts_of_models_with_other_class_counts_are_not_comparable(tmp_path):
    labels = ["yes", "no", "up", "_silence_"]
    path = write_jsonl(tmp_path / "r.jsonl", [trial("bcresnet_1", 0, 0.5, counts=(8_968, 3_114_564, 2_481_900),
                                                    labels=labels)])  # fmt: skip
    trial_set = load_trials([path])
    results = evaluate_claims(trial_set.trials, {c: "C1" for c in trial_set.contexts})
    counts = [r for r in results if r.kind == "count"]
    assert counts and all(r.verdict == NOT_COMPARABLE and "4 classes" in r.evidence for r in counts)
