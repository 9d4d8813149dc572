"""Deflated Sharpe ratio and PBO against the papers' worked numbers and hand-counted cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bt.overfit import (
    deflated_sharpe_ratio,
    expected_max_sharpe,
    pbo_cscv,
    per_period_returns,
    probabilistic_sharpe_ratio,
    sharpe_ratio,
)


def test_expected_max_sharpe_matches_the_dsr_paper_example():
    # Bailey & Lopez de Prado (2014), numerical example: 100 trials, variance of the annualised
    # Sharpe ratios 0.5 over 250 days a year -> expected max of about 0.1132 per day.
    sr0 = expected_max_sharpe(100, 0.5 / 250)
    assert sr0 == pytest.approx(0.1132, abs=5e-5)


def test_psr_of_the_paper_example_by_hand():
    # Same example: annualised SR 2.5, 1250 daily observations, skew -3, kurtosis 10.
    sr = 2.5 / math.sqrt(250)
    sr0 = expected_max_sharpe(100, 0.5 / 250)
    z = (sr - sr0) * math.sqrt(1249) / math.sqrt(1 + 3 * sr + 9 / 4 * sr * sr)
    by_hand = 0.5 * math.erfc(-z / math.sqrt(2))
    got = probabilistic_sharpe_ratio(sr, sr0, 1250, -3.0, 10.0)
    assert got == pytest.approx(by_hand, rel=1e-12)
    assert got == pytest.approx(0.90, abs=0.005)  # the paper reports 0.9004


def test_one_trial_deflates_nothing_and_more_trials_deflate_more():
    rng = np.random.default_rng(1)
    r = rng.normal(0.002, 0.01, 500)
    one = deflated_sharpe_ratio(r, 1, sharpe_variance=0.01)
    assert one.sharpe_benchmark == 0.0
    z = one.sharpe * math.sqrt(499) / math.sqrt(1 - one.skew * one.sharpe + (one.kurtosis - 1) / 4 * one.sharpe**2)
    assert one.dsr == pytest.approx(0.5 * math.erfc(-z / math.sqrt(2)), rel=1e-12)
    many = deflated_sharpe_ratio(r, 1000, sharpe_variance=0.01)
    assert many.dsr < one.dsr
    assert many.sharpe_benchmark > 0


def test_dsr_uses_the_variance_of_the_trial_sharpes():
    r = np.random.default_rng(2).normal(0.001, 0.01, 300)
    sharpes = np.array([0.0, 0.05, -0.05, 0.1, -0.1])
    a = deflated_sharpe_ratio(r, 5, trial_sharpes=sharpes)
    b = deflated_sharpe_ratio(r, 5, sharpe_variance=float(np.var(sharpes, ddof=1)))
    assert a.dsr == b.dsr and a.sharpe_variance == pytest.approx(0.00625)


def test_dsr_of_flat_returns_is_nan_not_an_error():
    res = deflated_sharpe_ratio(np.zeros(50), 10, sharpe_variance=0.01)
    assert math.isnan(res.dsr) and res.to_dict()["dsr"] is None


def test_sharpe_ratio_ignores_nan():
    assert sharpe_ratio(np.array([1.0, np.nan, 3.0])) == pytest.approx(2.0 / math.sqrt(2.0))


def test_pbo_two_blocks_swapped_winners_is_one():
    # Trial 0 wins the first half and loses the second; trial 1 the reverse. With two blocks,
    # each split picks the in-sample winner, which is the loser out of sample: PBO = 1.
    m = np.array([[0.02, -0.01], [0.03, -0.02], [-0.01, 0.02], [-0.02, 0.03]])
    res = pbo_cscv(m, n_blocks=2)
    assert res.n_splits == 2 and res.pbo == 1.0
    # rank 1 of 2 -> w = 1/3 -> logit log(1/2)
    np.testing.assert_allclose(res.logits, [math.log(0.5)] * 2)


def test_pbo_dominant_trial_is_zero():
    rng = np.random.default_rng(3)
    m = rng.normal(0, 0.01, (160, 8))
    m[:, 5] += 0.05  # best in every block, in and out of sample
    res = pbo_cscv(m, n_blocks=8)
    assert res.n_splits == 70 and res.pbo == 0.0


def test_pbo_hand_counted_four_blocks():
    # 3 trials x 4 blocks of one period each; 6 splits, counted by hand below.
    # Sharpe on a 2-period sample = mean / std; choose values with distinct, easy orderings.
    m = np.array(
        [
            [0.03, 0.01, 0.02],
            [0.01, 0.02, 0.00],
            [-0.02, 0.01, 0.01],
            [0.00, 0.03, 0.02],
        ]
    )
    res = pbo_cscv(m, n_blocks=4)
    expected = []
    import itertools

    def sr(x):
        return x.mean() / x.std(ddof=1) if x.std(ddof=1) > 0 else np.sign(x.mean()) * 1e12

    for c in itertools.combinations(range(4), 2):
        o = [i for i in range(4) if i not in c]
        best = int(np.argmax([sr(m[list(c), j]) for j in range(3)]))
        oos = np.array([sr(m[o, j]) for j in range(3)])
        rank = (oos < oos[best]).sum() + ((oos == oos[best]).sum() + 1) / 2
        expected.append(rank / 4 <= 0.5)
    assert res.pbo == pytest.approx(np.mean(expected))
    # By hand (two-value Sharpe = (a + b) / (sqrt(2) |a - b|)): in-sample blocks {0,1}, {0,3},
    # {1,2} pick a trial ranked 2 of 3 out of sample (logit 0) and {2,3} one ranked 1 of 3;
    # {0,2} and {1,3} pick trial 1, ranked 3 of 3.
    assert res.pbo == pytest.approx(4 / 6)


def test_pbo_of_pure_noise_is_near_one_half():
    rng = np.random.default_rng(4)
    pbos = [pbo_cscv(rng.normal(0, 0.01, (128, 20)), n_blocks=8).pbo for _ in range(20)]
    assert 0.3 < float(np.mean(pbos)) < 0.7


def test_pbo_errors_say_what_is_wrong():
    with pytest.raises(ValueError, match="at least 2 trials"):
        pbo_cscv(np.zeros((20, 1)))
    with pytest.raises(ValueError, match="even number"):
        pbo_cscv(np.zeros((20, 3)), n_blocks=5)
    with pytest.raises(ValueError, match="cannot be cut into 16 blocks"):
        pbo_cscv(np.zeros((10, 3)), n_blocks=16)


def test_pbo_random_subset_of_splits_is_seeded():
    m = np.random.default_rng(5).normal(0, 1, (64, 6))
    a = pbo_cscv(m, n_blocks=16, max_splits=500, seed=1)
    b = pbo_cscv(m, n_blocks=16, max_splits=500, seed=1)
    assert a.n_splits == 500 and a.pbo == b.pbo


def test_per_period_returns_sums_on_a_fixed_grid():
    ts = np.array([0, 500, 1500, 3999, 4000, -1])
    r = np.array([0.01, 0.02, np.nan, 0.03, 0.5, 0.7])
    got = per_period_returns(ts, r, 0, 4000, 1000)
    np.testing.assert_allclose(got, [0.03, 0.0, 0.0, 0.03])
