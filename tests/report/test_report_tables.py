"""Tables of the fixture sweep: per-variant summary, Pareto set, latency, ablations and trial pairing."""

from __future__ import annotations

import math

import pytest
from report_records import trial, write_jsonl

from kwsbench.report.tables import ablation_table, ablations, latency_table, pareto_mask, summary_table
from kwsbench.report.trials import load_trials
from kwsbench.report.variants import variant_of
from kwsbench.results.schema import RecordError

# math.isclose below (relative 1e-9): means and standard deviations of a few decimals, computed in float64
# by math.fsum, differ from the decimal result by rounding alone (~1e-16), on any CPU.


def test_summary_has_mean_and_std_over_seeds_and_counts(fixture_records):
    summary = summary_table(load_trials([fixture_records])).set_index("variant")
    row = summary.loc["bcresnet_1"]
    assert row["seeds"] == 4 and row["seed_list"] == "0 1 2 3"
    assert math.isclose(row["final_test_mean"], 0.915)
    # Sample std of 0.90 0.92 0.91 0.93: sqrt(0.0005 / 3).
    assert math.isclose(row["final_test_std"], math.sqrt(0.0005 / 3))
    assert math.isclose(row["best_test_mean"], 0.910)  # 0.005 below final in every fixture trial
    assert (row["params"], row["macs_total"], row["macs_conv"]) == (9_232, 3_114_820, 2_482_156)
    assert math.isclose(row["latency_ms_eager"], 0.30)
    # The failed seed 9 of bcresnet_1_5 is counted beside its four finished seeds.
    assert summary.loc["bcresnet_1_5", "failed"] == 1 and summary.loc["bcresnet_1_5", "seeds"] == 4
    assert summary.loc["bcresnet_1 use_subspectral_norm=False", "paper_model"] == "table2_no_ssn"
    assert summary.loc["tcresnet14_1_5", "paper_model"] == "tcresnet14_1_5"
    assert list(summary.index) == sorted(summary.index)


def test_pareto_front_of_the_fixture(fixture_records):
    summary = summary_table(load_trials([fixture_records]))
    # MACs: freq-maxpool is cheapest (2.99 M), no-shortcut the most accurate at 3.11 M, BC-ResNet-1.5 the
    # most accurate overall; bcresnet_1, attention and no-SSN cost the same as no-shortcut for less,
    # TC-ResNet14-1.5 costs more than BC-ResNet-1.5 for less.
    assert set(summary.loc[summary["pareto_macs"], "variant"]) == {
        "table2_freq_maxpool", "table2_no_shortcut", "bcresnet_1_5"
    }  # fmt: skip
    # Eager latency: freq-maxpool (0.26 ms) is fastest; no-SSN (0.28, 89.25 %) beats it in accuracy and
    # no-shortcut (0.29, 93.75 %) in speed; bcresnet_1 (0.30) and attention (0.31) are slower than
    # no-shortcut for less; BC-ResNet-1.5 (0.45) is the most accurate; TC-ResNet14-1.5 is dominated.
    assert set(summary.loc[summary["pareto_eager"], "variant"]) == {
        "table2_freq_maxpool", "bcresnet_1 use_subspectral_norm=False", "table2_no_shortcut", "bcresnet_1_5"
    }  # fmt: skip


@pytest.mark.parametrize(
    ("costs", "values", "front"),
    [
        ([1, 2, 3], [0.5, 0.6, 0.7], [True, True, True]),  # each buys accuracy with cost
        ([1, 2, 3], [0.7, 0.6, 0.5], [True, False, False]),  # the cheapest is also the best
        ([1, 1, 2], [0.5, 0.5, 0.4], [True, True, False]),  # identical points dominate neither other
        ([1, 1], [0.5, 0.6], [False, True]),  # same cost, lower accuracy
        ([None, 2], [0.9, 0.5], [False, True]),  # a point without a cost is not on the front
    ],
)
def test_pareto_mask(costs, values, front):
    assert pareto_mask(costs, values) == front


def test_latency_table_keeps_the_protocol(fixture_records):
    table = latency_table(load_trials([fixture_records]))
    row = table[table["variant"] == "bcresnet_1"].iloc[0]
    assert row["backend"] == "eager" and row["measurements"] == 4 and row["threads"] == 1
    assert "kwsbench-latency/1: warm-up 20" in row["protocol"]


def test_ablations_are_one_option_apart_and_paired_by_seed(fixture_records):
    trial_set = load_trials([fixture_records])
    found = ablations(trial_set)
    assert sorted(a.option for a in found) == [
        "broadcast", "frequency_pool", "tau", "use_shortcut", "use_subspectral_norm"
    ]  # fmt: skip
    table = ablation_table(found)
    ssn = table[(table["option"] == "use_subspectral_norm")].set_index("value")
    assert bool(ssn.loc[True, "reference"]) and not bool(ssn.loc[False, "reference"])
    # bcresnet_1 without SSN minus with SSN, seeds 0-3: -0.0225 on average.
    assert math.isclose(ssn.loc[False, "diff_mean"], -0.0225, rel_tol=1e-9)
    assert ssn.loc[False, "paired_seeds"] == 4 and ssn.loc[False, "verdict"] == "lower"
    maxpool = table[table["option"] == "frequency_pool"].set_index("value")
    assert maxpool.loc["max", "paired_seeds"] == 2 and maxpool.loc["max", "verdict"] == "undecided"


def test_trials_pair_only_within_one_dataset_and_recipe(tmp_path):
    other = {**trial("bcresnet_1", 0, 0.5)["recipe"], "epochs": 10}
    records = [trial("bcresnet_1", s, 0.9) for s in range(3)]
    records += [trial("table2_no_ssn", s, 0.8, recipe=other) for s in range(3)]
    trial_set = load_trials([write_jsonl(tmp_path / "r.jsonl", records)])
    assert len(trial_set.contexts) == 2
    assert ablations(trial_set) == []
    # The same data on another machine (other folder paths) is the same context.
    moved = [
        trial(
            "bcresnet_1",
            0,
            0.9,
            dataset={**records[0]["dataset"], "data_dir": "/elsewhere/speech_commands_test_set_v0.02"},
        )
    ]
    both = load_trials(
        [write_jsonl(tmp_path / "a.jsonl", records[:1]), write_jsonl(tmp_path / "b.jsonl", moved)]
    )
    assert len(both.contexts) == 1


def test_a_rerun_that_succeeded_supersedes_its_failure(tmp_path):
    failed = trial("bcresnet_1", 0, None, status="failed", error="killed")
    records = [failed, trial("bcresnet_1", 0, 0.9), trial("bcresnet_1", 1, None, status="failed", error="x")]
    trial_set = load_trials([write_jsonl(tmp_path / "r.jsonl", records)])
    assert [t.seed for t in trial_set.trials] == [0]
    assert [r.seed for r in trial_set.failed] == [1]
    assert trial_set.superseded_failures == 1


def test_variants_equal_across_spellings():
    assert variant_of("bcresnet_1", {"use_subspectral_norm": False}) == variant_of("table2_no_ssn")
    assert variant_of("bcresnet_1", {"tau": 2}) == variant_of("bcresnet_2")  # YAML's 2 is tau 2.0
    assert variant_of("bcresnet_1") != variant_of("bcresnet_1", {"num_subbands": 4})
    assert variant_of("dscnn_s", {}) != variant_of("dscnn_m", {})


def test_a_file_of_other_records_is_refused(tmp_path):
    latency = tmp_path / "latency.jsonl"
    latency.write_text('{"kind": "latency", "schema_version": 1, "name": "m", "backend": "eager", '
                       '"threads": 1, "batch": 1, "timed": "model"}\n')  # fmt: skip
    with pytest.raises(RecordError, match="no trial records"):
        load_trials([latency])
