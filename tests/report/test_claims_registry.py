"""The report's data tables (claims, presets) against the model registry, which they restate torch-free.

Imports torch: this is the one place where the report's numbers meet the models they describe.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from report_records import LABELS, trial, write_jsonl

from kwsbench.measure.counts import count_macs, count_params
from kwsbench.models import create_model, list_models, model_info
from kwsbench.models.bcresnet import BCResNet
from kwsbench.models.resnet_ablation import ResNetDS
from kwsbench.report.claims import (
    ACCURACY_CLAIMS,
    COUNT_CLAIMS,
    ORDERING_CLAIMS,
    RATIO_CLAIMS,
    TREND_CLAIMS,
    evaluate_claims,
)
from kwsbench.report.stats import NOT_COMPARABLE, SUPPORTED
from kwsbench.report.trials import load_trials
from kwsbench.report.variants import FAMILY_DEFAULTS, PRESETS

FAMILY_CLASSES = {"bcresnet": BCResNet, "resnet_ds": ResNetDS}
EQUAL = [c for c in COUNT_CLAIMS if c.bound == "equal"]


@pytest.mark.parametrize("claim", EQUAL, ids=[c.id for c in EQUAL])
def test_declared_counts_equal_the_registrys(claim):
    info = model_info(claim.model)
    if claim.quantity == "params":
        assert claim.declared == info.declared.params and claim.stated == info.declared.params_stated
        if claim.exact is not None:
            assert info.reference.exact and claim.exact == info.reference.params and claim.tolerance == 0
        else:
            assert claim.tolerance == info.param_tolerance
    else:
        assert claim.declared == info.declared.macs
        assert info.declared.macs_stated.startswith(claim.stated)
        # The paper's Mult column is fvcore's total; the baselines' papers count convolutions and layers.
        assert (claim.quantity == "macs_total") == info.declared.macs_counting.startswith("fvcore total")


def test_every_registered_declared_count_has_a_claim():
    claimed = {(c.model, "params" if c.quantity == "params" else "macs") for c in EQUAL}
    for name in list_models():
        declared = model_info(name).declared
        if declared.params is not None:
            assert (name, "params") in claimed, name
        if declared.macs is not None:
            assert (name, "macs") in claimed, name


def test_declared_accuracies_equal_the_registrys():
    for claim in ACCURACY_CLAIMS:
        registry = {a.dataset: a for a in model_info(claim.model).declared.accuracy}
        for version in ("v1", "v2"):
            found = registry.get(f"gsc_{version}_12")
            top1 = getattr(claim, version)
            assert (found.top1 if found else None) == top1, (claim.model, version)
            if found is not None:
                assert getattr(claim, f"{version}_std") == found.std
                assert claim.seeds == found.seeds or found.std is None
    with_accuracy = {n for n in list_models() if model_info(n).declared.accuracy}
    assert with_accuracy == {c.model for c in ACCURACY_CLAIMS}


def test_every_model_a_claim_names_is_registered():
    names = set(list_models())
    for claim in ORDERING_CLAIMS:
        assert {claim.better, claim.worse} <= names
    for claim in RATIO_CLAIMS:
        assert {claim.smaller, claim.larger} <= names
    for claim in TREND_CLAIMS:
        assert claim.base in names and claim.option in FAMILY_DEFAULTS[PRESETS[claim.base][0]]


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_build_the_registered_network(name):
    family, options = PRESETS[name]
    cls = FAMILY_CLASSES[family]
    # The same modules, shapes and hyper-parameters: the variant table names this very network.
    assert repr(create_model(name)) == repr(cls(12, **{**FAMILY_DEFAULTS[family], **options}))


@pytest.mark.parametrize("family", list(FAMILY_DEFAULTS))
def test_family_defaults_are_the_constructors(family):
    params = inspect.signature(FAMILY_CLASSES[family].__init__).parameters
    defaults = {k: p.default for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert FAMILY_DEFAULTS[family] == defaults


@pytest.mark.slow
def test_kwsbenchs_models_support_every_count_claim(tmp_path):
    """Each claimed model's measured counts (the registry's reference rebuild where it has one, fvcore
    otherwise) give *supported*, or *not comparable* exactly where the claim says the paper counted
    something else: no tolerance above is tuned past a model kwsbench actually builds."""
    records = []
    for name in sorted({c.model for c in COUNT_CLAIMS}):
        model = create_model(name).eval()
        reference = model_info(name).reference
        counts = {"macs_total": reference.macs_total, "macs_conv": reference.macs_conv}
        needed = {c.quantity for c in COUNT_CLAIMS if c.model == name} - {"params"}
        if any(counts[q] is None for q in needed):
            x = torch.randn(model_info(name).input.shape(1), generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                macs = count_macs(model, x)
            counts = {"macs_total": macs.total, "macs_conv": macs.conv}
        triple = (count_params(model), counts["macs_total"], counts["macs_conv"])
        records.append(trial(name, 0, 0.9, counts=triple, labels=LABELS))
    trial_set = load_trials([write_jsonl(tmp_path / "counts.jsonl", records)])
    results = {r.claim: r for r in evaluate_claims(trial_set.trials, {c: "C1" for c in trial_set.contexts})}
    for claim in COUNT_CLAIMS:
        expected = NOT_COMPARABLE if claim.not_comparable else SUPPORTED
        assert results[claim.id].verdict == expected, (claim.id, results[claim.id].evidence)
    for claim in RATIO_CLAIMS:
        assert results[claim.id].verdict == SUPPORTED, (claim.id, results[claim.id].evidence)
