"""Metric: a value or the reason there is none; percentile-bootstrap intervals against the normal theory of a mean."""

import math
import re

import numpy as np
import pytest

from vlmbench.errors import VlmbenchError
from vlmbench.metrics.bootstrap import Metric, measure


def test_a_metric_without_a_value_must_say_why_and_never_holds_nan():
    with pytest.raises(ValueError, match="gives no reason"):
        Metric("m", None, None, None, 0)
    with pytest.raises(ValueError, match="from no samples"):
        Metric("m", 0.5, None, None, 0)
    with pytest.raises(ValueError, match="not a finite number"):
        Metric("m", float("nan"), None, None, 3)
    with pytest.raises(ValueError, match="ci_high"):
        Metric("m", 0.5, 0.1, float("inf"), 3)
    missing = Metric.not_measured("m", 0, "no pairs")
    assert not missing.measured and missing.to_dict() == {"name": "m", "value": None, "ci_low": None,
                                                          "ci_high": None, "n": 0, "note": "no pairs"}


@pytest.mark.parametrize("level, z", [(0.95, 1.959964), (0.5, 0.674490)])
def test_interval_of_a_mean_matches_normal_theory(level, z):
    data = np.random.default_rng(0).normal(3.0, 2.0, size=2000)
    m = measure("mean", lambda i: data[i].mean(), len(data), rng=np.random.default_rng(1), level=level)
    half_width = z * data.std() / math.sqrt(len(data))
    assert m.value == data.mean() and m.n == 2000 and m.note == ""
    assert m.ci_low == pytest.approx(data.mean() - half_width, abs=0.12 * half_width)
    assert m.ci_high == pytest.approx(data.mean() + half_width, abs=0.12 * half_width)


def test_the_same_generator_seed_gives_the_same_interval():
    data = np.random.default_rng(0).random(100)
    first, again, other = (measure("mean", lambda i: data[i].mean(), 100, rng=np.random.default_rng(seed))
                           for seed in (5, 5, 6))
    assert (first.ci_low, first.ci_high) == (again.ci_low, again.ci_high) != (other.ci_low, other.ci_high)


def test_strata_keep_their_sizes_in_every_resample():
    group = np.arange(60) < 20
    share = lambda i: group[i].mean()  # noqa: E731
    plain = measure("share", share, 60, rng=np.random.default_rng(0))
    stratified = measure("share", share, 60, rng=np.random.default_rng(0),
                         strata=[np.flatnonzero(group), np.flatnonzero(~group)])
    assert plain.ci_high - plain.ci_low > 0.1
    assert stratified.ci_low == stratified.ci_high == pytest.approx(1 / 3)


def test_undefined_resamples_are_left_out_and_counted():
    # a draw without unit 0 is undefined: probability (1 - 1/50)^50 = 0.364
    m = measure("m", lambda i: 1.0 if 0 in i else float("nan"), 50, rng=np.random.default_rng(0))
    left_out = int(re.fullmatch(r"(\d+) of 1000 bootstrap resamples undefined and left out", m.note).group(1))
    assert 320 < left_out < 410
    assert m.ci_low == m.ci_high == 1.0


def test_no_units_or_no_resamples():
    rng = np.random.default_rng(0)
    assert measure("m", np.mean, 0, rng=rng, note="no pairs with a true order") == Metric(
        "m", None, None, None, 0, "no pairs with a true order")
    m = measure("m", lambda i: float(len(i)), 4, rng=rng, resamples=0)
    assert (m.value, m.ci_low, m.ci_high) == (4.0, None, None) and "0 bootstrap resamples" in m.note


def test_bad_settings():
    with pytest.raises(TypeError, match="numpy Generator"):
        measure("m", np.mean, 3, rng=0)
    with pytest.raises(VlmbenchError, match="resamples"):
        measure("m", np.mean, 3, rng=np.random.default_rng(0), resamples=-1)
    with pytest.raises(VlmbenchError, match="confidence level"):
        measure("m", np.mean, 3, rng=np.random.default_rng(0), level=95)
