"""Training-throughput records: fields, arithmetic, thread restoration and bad input."""

from __future__ import annotations

import pytest
import torch

from kwsbench.errors import ConfigError, ModelError
from kwsbench.measure.train_speed import compare_training_throughput, measure_training_throughput


def test_record_fields_and_arithmetic():
    threads = torch.get_num_threads()
    record = measure_training_throughput("bcresnet_1", batch=4, threads=1, steps=3, warmup=1)
    assert torch.get_num_threads() == threads
    assert record.name == "bcresnet_1" and record.fast is True and record.formulation == "fast"
    assert (record.batch, record.threads, record.steps, record.warmup) == (4, 1, 3, 1)
    assert record.step_ms_p90 >= record.step_ms_median > 0
    assert record.samples_per_s == pytest.approx(4 / (record.step_ms_median / 1e3), rel=1e-3)
    assert "SGD" in record.protocol and "backward" in record.protocol


def test_compare_measures_both_formulations():
    result = compare_training_throughput("table2_no_ssn", batch=2, threads=1, steps=2, warmup=0)
    assert result["eager"].fast is False and result["fast"].fast is True
    ratio = result["fast"].samples_per_s / result["eager"].samples_per_s
    assert result["speedup"] == pytest.approx(ratio, abs=1e-3)


@pytest.mark.parametrize("option", [{"steps": 0}, {"batch": 0}, {"threads": 0}, {"warmup": -1}])
def test_bad_settings_name_the_setting(option):
    with pytest.raises(ConfigError, match=next(iter(option))):
        measure_training_throughput("bcresnet_1", **option)


def test_unknown_model():
    with pytest.raises(ModelError, match="bcresnet_1"):
        measure_training_throughput("bcresnet1")
