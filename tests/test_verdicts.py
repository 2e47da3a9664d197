"""Paired bootstrap CIs, the static envelope comparisons and the claims ledger."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ditpareto.bootstrap import (
    bootstrap_fid, bootstrap_set_metrics, frechet_distance, manifold_membership, mmd2, mmd2_replicates,
    paired_indices, reference_replicates,
)
from ditpareto.intervals import Estimate, basic_ci, holm, percentile_ci, widen
from ditpareto.verdicts import (
    OUTCOMES, SeedNoise, answer, claim_outcome, claims_ledger, compare_with_envelopes, envelope_at, envelope_nodes,
    load_points,
)

RNG = np.random.default_rng(0)
REFERENCE = RNG.normal(size=(2000, 8))


def features(shift: float, n: int = 600, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 8)) + shift


def test_indices_are_paired_across_jobs():
    assert np.array_equal(paired_indices(100, 5, 3), paired_indices(100, 5, 3))
    assert not np.array_equal(paired_indices(100, 5, 3), paired_indices(100, 5, 4))


def test_a_points_ci_contains_its_fid():
    generated = features(0.3)
    fid = frechet_distance(generated.mean(0), np.cov(generated, rowvar=False), REFERENCE.mean(0),
                           np.cov(REFERENCE, rowvar=False))
    low, high = basic_ci(fid, bootstrap_fid(generated, REFERENCE, 200, seed=0))
    assert low <= fid <= high and high - low > 0


def test_the_basic_interval_reflects_the_resampling_bias_toward_the_population_fid():
    """A set from the reference's own distribution, small for its dimension: the resampled sets' FIDs all lie
    above the estimate (duplicates shrink the spread), which itself lies above the population FID (0 here); the
    basic interval reflects the replicates below the estimate."""
    generated = np.random.default_rng(5).normal(size=(150, 8))
    fid = frechet_distance(generated.mean(0), np.cov(generated, rowvar=False), REFERENCE.mean(0),
                           np.cov(REFERENCE, rowvar=False))
    replicates = bootstrap_fid(generated, REFERENCE, 400, seed=0)
    assert np.percentile(replicates, 2.5) > fid  # the plain percentile interval misses the estimate
    low, high = basic_ci(fid, replicates)
    assert low < high < fid and low <= 0.05
    assert np.isnan(basic_ci(float("nan"), replicates)).all() and np.isnan(basic_ci(fid, [float("nan")])).all()


def test_basic_bootstrap_intervals_cover_the_population_fid_of_gaussian_features():
    """Coverage simulation: generated ~ N(0.25, I), reference ~ N(0, 1.2 I) in 4-d (population FID known in closed
    form); 60 independent studies of N = 400 against 1600 reference samples, 300 replicates each."""
    d, shift, scale = 4, 0.25, 1.2
    population = d * shift ** 2 + d * (1 + scale - 2 * np.sqrt(scale))
    covered = 0
    for trial in range(60):
        rng = np.random.default_rng(100 + trial)
        generated = rng.normal(size=(400, d)) + shift
        reference = rng.normal(size=(1600, d)) * np.sqrt(scale)
        fid = frechet_distance(generated.mean(0), np.cov(generated, rowvar=False), reference.mean(0),
                               np.cov(reference, rowvar=False))
        low, high = basic_ci(fid, bootstrap_fid(generated, reference, 300, seed=trial))
        covered += low <= population <= high
    assert covered / 60 >= 0.9


def test_the_vectorised_bootstrap_equals_one_replicate_at_a_time_and_the_shared_reference_statistics():
    import ditpareto.bootstrap as bootstrap

    rng = np.random.default_rng(7)
    generated, reference = rng.normal(size=(300, 6)) + 0.1, rng.normal(size=(900, 6))
    fast = bootstrap_fid(generated, reference, 40, seed=3)
    shared = bootstrap_fid(generated, reference_replicates(reference, 40, 4), 40, seed=3)
    limit = bootstrap.VECTORISED_MAX_DIM
    try:
        bootstrap.VECTORISED_MAX_DIM = 2
        slow = bootstrap_fid(generated, reference, 40, seed=3)
    finally:
        bootstrap.VECTORISED_MAX_DIM = limit
    assert fast == pytest.approx(slow, rel=1e-9, abs=1e-9) and np.array_equal(fast, shared)
    with pytest.raises(ValueError, match="do not match"):
        bootstrap_fid(generated, reference_replicates(reference, 40, 9), 40, seed=3)  # another index seed


def test_the_paired_ci_of_identical_sample_sets_is_zero():
    generated = features(0.3)
    a = bootstrap_fid(generated, REFERENCE, 100, seed=0)
    b = bootstrap_fid(generated.copy(), REFERENCE, 100, seed=0)
    assert percentile_ci(a - b) == (0.0, 0.0)


def test_two_methods_differing_only_in_noise_get_a_ci_containing_zero():
    """Two sample sets from the same distribution (as two methods identical but for sampling noise): the paired
    difference's CI contains 0; a real shift is detected."""
    def fid(x):
        return frechet_distance(x.mean(0), np.cov(x, rowvar=False), REFERENCE.mean(0), np.cov(REFERENCE, rowvar=False))

    same_a, same_b, far = features(0.2, seed=1), features(0.2, seed=2), features(0.6, seed=2)
    diff = bootstrap_fid(same_a, REFERENCE, 200, 0) - bootstrap_fid(same_b, REFERENCE, 200, 0)
    low, high = percentile_ci(diff)
    assert low < 0 < high
    shifted = bootstrap_fid(far, REFERENCE, 200, 0) - bootstrap_fid(same_a, REFERENCE, 200, 0)
    assert percentile_ci(shifted)[0] > 0


def test_kid_precision_recall_intervals_bracket_their_full_set_values_and_see_a_shift():
    import torch
    from torch_fidelity.metric_kid import kernel_mmd
    from torch_fidelity.metric_prc import prc_features_to_metric

    reference, close, far = REFERENCE[:600], features(0.1), features(1.5, seed=2)
    membership = manifold_membership(close, reference, 3)
    prc = prc_features_to_metric(torch.from_numpy(close), torch.from_numpy(reference), prc_neighborhood=3,
                                 verbose=False)
    point = {"kid": kernel_mmd(close, reference), "precision": prc["precision"], "recall": prc["recall"]}
    ci = {name: percentile_ci(v)
          for name, v in bootstrap_set_metrics(close, reference, 100, 0, membership).items()}
    in_reference, in_generated = membership
    assert (float(in_reference.mean()), float(in_generated.mean())) == (prc["precision"], prc["recall"])  # exact
    assert ci["kid"][0] <= kernel_mmd(close, reference) <= ci["kid"][1]
    assert ci["precision"][0] <= prc["precision"] <= ci["precision"][1]
    assert ci["recall"][0] <= prc["recall"] <= ci["recall"][1]
    assert mmd2(close, reference) == pytest.approx(kernel_mmd(close, reference), rel=1e-9)
    unequal = percentile_ci(mmd2_replicates(
        close[:300], reference, paired_indices(300, 50, 0), paired_indices(600, 50, 1)))  # sizes may differ
    assert unequal[0] <= mmd2(close[:300], reference) <= unequal[1]
    far_membership = manifold_membership(far, reference, 3)
    far_point = {"kid": kernel_mmd(far, reference), "precision": float(far_membership[0].mean()),
                 "recall": float(far_membership[1].mean())}
    shifted = {name: percentile_ci(v)
               for name, v in bootstrap_set_metrics(far, reference, 100, 0, far_membership).items()}
    assert shifted["kid"][0] > ci["kid"][1] and shifted["precision"][1] < ci["precision"][0]


def test_answers():
    assert answer(-2, -1) == "yes" and answer(1, 2) == "no" and answer(-1, 1) == "not significant"
    assert answer(float("nan"), 1) == "not comparable"


def _record(method, budget, steps, gmacs, fid, replicates, ratio=1.0, ft="1.00"):
    return {"method": method, "budget": budget, "steps": steps, "seed": 0, "cfg_scale": 2.0, "ft": ft,
            "gmacs_per_image": gmacs, "fid": fid, "nominal_compute_ratio": ratio, "fid_bootstrap": replicates}


@pytest.fixture
def study():
    b = np.linspace(-0.1, 0.1, 50)  # replicate offsets shared by every point: paired
    records = [
        _record("dit", "10", 10, 1.0, 5.0, list(5.0 + b), ft="0.00"),
        _record("dit", "5", 5, 0.5, 6.0, list(6.0 + b), 0.5, ft="0.00"),
        _record("dit-ft", "10", 10, 1.0, 4.0, list(4.0 + b)),
        _record("dit-ft", "5", 5, 0.5, 5.0, list(5.0 + b), 0.5),
        _record("dydit", "0.50", 10, 0.7, 4.2, list(4.2 + b), 0.5),  # envelope at 0.7: ~4.51 -> beats it
        _record("flexdit", "0.61-0.86", 10, 0.7, 5.5, list(5.5 + b), 0.6),  # worse than the envelope
    ]
    return load_points(records, fixed_cfg=2.0)


def test_envelope_comparisons(study):
    compared = compare_with_envelopes(study).set_index("method")
    assert compared.loc["dydit", "beats_fewer_steps"] == "yes"
    assert compared.loc["flexdit", "beats_fewer_steps"] == "no"
    assert compared.loc["dydit", "diff_ci_low"] <= compared.loc["dydit", "diff_vs_envelope"] <= compared.loc[
        "dydit", "diff_ci_high"]
    # dydit at 0.7 GMACs reaches FID 4.2, which the dit-ft ladder reaches at exp(log-interp) ~0.87 GMACs
    assert 0.15 < compared.loc["dydit", "compute_saved_vs_dit_ft"] < 0.25
    # below the untouched ladder's best FID: it saves at least 1 - 0.7 / 1.0, and says so
    assert compared.loc["dydit", "compute_saved_vs_dit"] == pytest.approx(0.3)
    assert compared.loc["dydit", "compute_saved_vs_dit_beyond_ladder"] == 1.0
    assert compared.loc["dydit", "compute_saved_vs_dit_text"].startswith("≥ +30% [")
    assert compared.loc["dydit", "executed_compute_ratio"] == pytest.approx(0.7)


def test_every_verdict_row_names_its_basis(study):
    claims = pd.DataFrame([
        {"method": "dit", "model": "DiT-XL/2", "resolution": 256, "setting": "250", "fid": 2.27, "compute_ratio": 1},
        {"method": "dydit", "model": "DiT-XL/2", "resolution": 256, "setting": "lambda=0.5", "fid": 2.07,
         "compute_ratio": 0.488},
        {"method": "flexdit", "model": "DiT-XL/2", "resolution": 512, "setting": "r in [0.61,0.86]", "fid": 2.96,
         "compute_ratio": 0.545},
    ])
    ledger = claims_ledger(study, compare_with_envelopes(study), claims, full_steps=10)
    regime = ledger["claim"].str.startswith("guidance regime")
    assert regime.sum() == 1 and ledger.loc[regime, "regime"].str.contains("unknown").all()
    ledger = ledger[~regime]
    assert set(ledger["verdict"]) <= set(OUTCOMES) and set(ledger["verdict_holm"]) <= set(OUTCOMES)
    assert ledger["basis"].str.len().min() > 10 and ledger["basis"].notna().all()
    by = ledger.set_index("claim")
    claim = next(c for c in by.index if c.startswith("lambda=0.5"))
    # ours: 4.2 / 5.0 - 1 = -16 %, claimed -8.8 % within (0.071 + 0.01) / 2.27 = 3.6 points: better than claimed
    assert by.loc[claim, "verdict"] == "better than claimed" and by.loc[claim, "estimate"] == pytest.approx(-0.16)
    assert by.loc[claim, "tolerance"] == pytest.approx((np.hypot(0.05, 0.05) + 0.01) / 2.27)
    assert by.loc[claim, "executed_compute_ratio"] == pytest.approx(0.7) and by.loc[claim, "compute_mismatch"]
    assert not any("512px" in c for c in by.index)  # 512-px claims have no toy analogue at 64 tokens
    beats = ledger[ledger["claim"].str.startswith("beats fewer steps")].set_index("method")["verdict"]
    assert beats.to_dict() == {"dydit": "reproduced", "flexdit": "worse than claimed"}
    assert (ledger["p_holm"] >= ledger["p_value"]).all()


def test_training_free_baselines_are_compared_with_the_untouched_ladder_and_trained_ones_with_dit_ft(study):
    """FORA (no training) at 0.7 GMACs, FID 4.6: above the dit-ft envelope (~4.51) but below the untouched dit's
    (~5.51): it beats the ladder with its own training compute. L2C (a router trained with the shared compute) at the
    same point is asked against dit-ft, and a training-free method takes no fine-tune seed spread."""
    b = np.linspace(-0.1, 0.1, 50)
    records = [_record("fora", "2", 10, 0.7, 4.6, list(4.6 + b), 0.5, ft="0.00"),
               _record("l2c", "0.30", 10, 0.7, 4.6, list(4.6 + b), 0.65)]
    points = pd.concat([study, load_points(records, fixed_cfg=2.0)], ignore_index=True)
    noise = SeedNoise(pd.DataFrame([{"method": m, "budget": "shared", "finetune_seeds": 3, "finetune_seed_std": 0.02}
                                    for m in ("dit-ft", "l2c")]))
    compared = compare_with_envelopes(points, noise).set_index("method")
    assert compared.loc["fora", "comparator"] == "dit" and compared.loc["l2c", "comparator"] == "dit-ft"
    assert compared.loc["fora", "envelope_fid"] == pytest.approx(6.0 - np.log(0.7 / 0.5) / np.log(2), abs=1e-6)
    assert compared.loc["fora", "beats_fewer_steps"] == "yes" and compared.loc["l2c", "beats_fewer_steps"] == "no"
    assert compared.loc["fora", "finetune_seed_std"] == 0 and compared.loc["l2c", "finetune_seed_std"] > 0
    ledger = claims_ledger(points, compare_with_envelopes(points, noise), pd.DataFrame(
        columns=["method", "model", "resolution", "setting", "fid", "compute_ratio"]), full_steps=10)
    beats = ledger[ledger["claim"].str.startswith("beats fewer steps")].set_index("method")
    assert beats.loc["fora", "verdict"] == "reproduced" and "dit envelope" in beats.loc["fora", "toy_analogue"]
    assert beats.loc["l2c", "verdict"] == "worse than claimed" and "dit-ft envelope" in beats.loc["l2c", "toy_analogue"]


def test_a_method_without_an_envelope_or_with_only_parity_points_still_gets_an_inconclusive_row(study):
    records = [_record("dit", "10", 10, 1.0, 5.0, [5.0] * 4, ft="0.00"),
               _record("dit-ft", "10", 10, 1.0, 4.0, [4.0] * 4),  # one rung: no envelope
               _record("flexidit", "0.00", 10, 1.0, 4.1, [4.1] * 4),  # parity point only
               _record("dydit", "0.50", 10, 0.5, 4.2, [4.2] * 4, 0.5)]
    points = load_points(records, fixed_cfg=2.0)
    ledger = claims_ledger(points, compare_with_envelopes(points), pd.DataFrame(
        columns=["method", "model", "resolution", "setting", "fid", "compute_ratio"]), full_steps=10)
    ledger = ledger[~ledger["claim"].str.startswith("guidance regime")]
    assert ledger.set_index("method")["verdict"].to_dict() == {"dydit": "inconclusive", "flexidit": "inconclusive"}
    assert ledger["basis"].str.contains("no dit-ft step ladder").all()


@pytest.mark.parametrize("n, dim", [(600, 8), (6, 40)])
def test_bootstrap_fid_equals_the_frechet_formula_on_each_replicate(n, dim):
    """The replicates' FID (square root of the reference covariance once, an n x n eigenproblem when the sample
    is smaller than the feature dimension) equals the usual formula on the resampled statistics."""
    rng = np.random.default_rng(3)
    generated, reference = rng.normal(size=(n, dim)) + 0.2, rng.normal(size=(900, dim))
    mu, sigma = reference.mean(0), np.cov(reference, rowvar=False)
    fast = bootstrap_fid(generated, (mu, sigma), 5, seed=5, chunk=2)  # chunks of 2, 2 and 1 replicates
    for value, idx in zip(fast, paired_indices(n, 5, 5), strict=True):
        sample = generated[idx]
        assert value == pytest.approx(frechet_distance(sample.mean(0), np.cov(sample, rowvar=False), mu, sigma),
                                      rel=1e-6, abs=1e-6)
    resampled = bootstrap_fid(generated, reference, 5, seed=5, chunk=2)
    assert resampled == pytest.approx(bootstrap_fid(generated, reference, 5, seed=5), rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("n", [7, 1000])
def test_resampled_means_from_counts_equal_the_means_of_the_resampled_values(n):
    """The recall's replicates from the reference's stored resample counts are bit for bit the means over its
    resampled indices (0/1 terms: exact sums either way)."""
    from ditpareto.bootstrap import resample_counts, resampled_means

    values = (np.random.default_rng(n).random(n) < 0.4).astype(np.float32)
    counts = resample_counts(n, 300, 2).astype(np.uint8)
    assert np.array_equal(resampled_means(values, counts, chunk=64), values[paired_indices(n, 300, 2)].mean(axis=1))


def test_finetune_seed_noise_is_measured_and_widens_the_intervals_of_its_budget(study):
    from ditpareto.verdicts import finetune_seed_noise

    records = [_record("dydit", "0.50", 10, 0.7, fid, [fid] * 50, 0.5, ft=ft)
               for ft, fid in (("1.00", 4.2), ("1.00s1", 4.6), ("1.00s2", 4.0))]
    noise = finetune_seed_noise(records)
    assert noise.set_index("method").loc["dydit", "finetune_seeds"] == 3
    assert noise.set_index("method").loc["dydit", "finetune_seed_std"] == pytest.approx(np.std([4.2, 4.6, 4.0], ddof=1))
    plain = compare_with_envelopes(study).set_index("method")
    wide = compare_with_envelopes(study, noise).set_index("method")
    assert wide.loc["dydit", "diff_ci_low"] < plain.loc["dydit", "diff_ci_low"]
    assert wide.loc["dydit", "diff_ci_high"] > plain.loc["dydit", "diff_ci_high"]
    # not repeated: the pooled spread, never 0
    assert wide.loc["flexdit", "diff_ci_low"] < plain.loc["flexdit", "diff_ci_low"]
    assert wide.loc["flexdit", "finetune_seed_source"] == "pooled (measured)"
    assert widen(1.0, 0.5, 1.5, 0.0) == (0.5, 1.5)
    assert load_points(records, fixed_cfg=2.0)["fid"].tolist() == [4.2]  # repeats stay out of the grid rows


def test_a_full_compute_point_and_a_shared_fine_tune_take_the_spread_of_the_fine_tune_they_sample():
    noise = SeedNoise(pd.DataFrame([{"method": "dydit", "budget": "0.50", "steps": 10, "finetune_seed_std": 0.3,
                                     "finetune_seeds": 3},
                                    {"method": "flexidit", "budget": "0.50", "steps": 10, "finetune_seed_std": 0.2,
                                     "finetune_seeds": 3}]))
    assert noise.lookup("dydit", "full@0.50") == (0.3, 2, "measured")
    assert noise.lookup("flexidit", "0.00") == (0.2, 2, "measured")  # one fine-tune serves every FlexiDiT budget
    std, df, source = noise.lookup("dydit", "0.70")  # unmeasured: the pooled spread with the pooled df
    assert (std, df, source) == (pytest.approx(np.sqrt((0.09 + 0.04) / 2)), 4, "pooled (measured)")
    assert SeedNoise(None).lookup("dydit", "0.50") == (0.0, None, "none measured")
    two = SeedNoise(pd.DataFrame([{"method": "dydit", "budget": "0.50", "steps": 10, "finetune_seed_std": 0.01,
                                   "finetune_seeds": 2},
                                  {"method": "flexdit", "budget": "0.44-0.61", "steps": 10, "finetune_seed_std": 0.2,
                                   "finetune_seeds": 3}]), recorded=True)
    # two seeds are too few for a spread of its own: the pooled one (df 1 + 2) stands in, and says so
    assert two.lookup("dydit", "0.50") == (pytest.approx(np.sqrt((0.01 ** 2 + 2 * 0.04) / 3)), 3,
                                           "pooled (recorded; own: 2 seeds)")


def test_seed_noise_widens_with_the_t_quantile_of_its_degrees_of_freedom():
    estimate = 1.0
    normal = widen(estimate, 1.0, 1.0, 0.1)
    three_seeds = widen(estimate, 1.0, 1.0, 0.1, df=2)
    assert normal[1] - estimate == pytest.approx(1.959964 * 0.1, rel=1e-5)
    assert three_seeds[1] - estimate == pytest.approx(4.302653 * 0.1, rel=1e-5)
    # a narrow interval beside the estimate (a paired median off the point estimate) only ever widens
    low, high = widen(1.0, 1.02, 1.04, 0.01, level=0.1)
    assert low < 1.02 and high > 1.04
    skewed = Estimate(-0.07, np.linspace(-0.08, -0.04, 101), noise_std=0.01, noise_df=5)
    assert skewed.p_below(-0.03) < 0.025 and skewed.p_above(-0.2) < 0.025 and skewed.p_below(-0.065) > 0.025


def test_the_lower_envelope_of_a_synthetic_ladder_takes_each_variant_between_its_own_neighbours():
    """Two variants: guided (1, 2, 4 GMACs: FID 6, 4, 3) and unguided (0.5, 1, 2: FID 7, 5, 3.5)."""
    b = np.zeros(3)
    rows = [{"method": "dit-ft", "variant": v, "gmacs": g, "fid": f, "replicates": np.array([f, f + 1])}
            for v, ladder in (("guided", [(1, 6), (2, 4), (4, 3)]), ("unguided", [(0.5, 7), (1, 5), (2, 3.5)]))
            for g, f in ladder]
    nodes = envelope_nodes(pd.DataFrame(rows))
    at = envelope_at(nodes, np.log([0.5, 1.0, np.sqrt(2), 2.0, 3.0, 4.0, 8.0, 0.25]), False)
    # 0.5: unguided only; 1: min(6, 5); sqrt 2 (halfway in log): min(guided 5, unguided 4.25); 2: min(4, 3.5);
    # 3: guided chord 4 -> 3 at log-fraction 0.585 = 3.415, but 3.5 is reachable at 2 GMACs -> 3.415;
    # 4: 3; outside: NaN
    assert at[:7 - 1] == pytest.approx([7, 5, 4.25, 3.5, 4 - np.log(1.5) / np.log(2), 3])
    assert np.isnan(at[6]) and np.isnan(at[7])
    replicated = envelope_at(nodes, np.log([1.0, 4.0]), True)
    assert replicated.shape == (2, 2) and replicated[1].tolist() == [6, 4]
    del b


def test_a_monotone_envelope_never_rises_with_compute():
    rows = [{"method": "dit", "variant": "guided", "gmacs": g, "fid": f, "replicates": np.array([f])}
            for g, f in ((1, 5.0), (2, 5.5), (3, 4.0))]  # 2 GMACs measures worse than 1: 5 is still reachable
    at = envelope_at(envelope_nodes(pd.DataFrame(rows)), np.log([1.5, 2.0]), False)
    assert at.tolist() == [5.0, 5.0]


@pytest.mark.parametrize("low, high, outcome", [
    (-0.12, -0.08, "reproduced"), (-0.30, -0.20, "better than claimed"), (0.05, 0.10, "worse than claimed"),
    (-0.20, -0.08, "inconclusive"), (-0.12, 0.02, "inconclusive"), (float("nan"), 0.0, "inconclusive")])
def test_the_four_outcomes_of_a_claim_on_constructed_intervals(low, high, outcome):
    assert claim_outcome(low, high, claimed=-0.10, tolerance=0.03) == outcome


def test_p_values_invert_the_interval_and_holm_adjusts_them():
    rng = np.random.default_rng(0)
    estimate = Estimate(-1.0, -1.0 + rng.normal(scale=0.5, size=4000))
    low, high = estimate.interval()
    assert high < 0 and estimate.p_below(high + 0.01) < 0.025 < estimate.p_below(high - 0.01)
    assert estimate.p_above(0) == 1.0
    assert estimate.p_below(0) == pytest.approx(0.0228, abs=0.006)  # one-sided normal tail at 2 sd
    assert holm([0.01, 0.04, 0.03, float("nan")])[:3].tolist() == pytest.approx([0.03, 0.06, 0.06])
    assert np.isnan(holm([0.01, float("nan")])[1])


def test_paired_points_must_have_equal_sample_counts():
    records = [_record("dit", "10", 10, 1.0, 5.0, [5.0] * 4, ft="0.00"),
               {**_record("dit-ft", "10", 10, 1.0, 4.0, [4.0] * 4), "params": {"num_samples": 500}}]
    with pytest.raises(ValueError, match="equal N"):
        load_points(records, fixed_cfg=2.0)


def test_unguided_static_points_join_the_ladder_as_their_own_variant():
    records = [_record("dit-ft", "10", 10, 1.0, 4.0, [4.0] * 4),
               {**_record("dit-ft", "10", 10, 0.5, 4.1, [4.1] * 4), "cfg_scale": 1.0},
               {**_record("dydit", "0.50", 10, 0.5, 4.1, [4.1] * 4), "cfg_scale": 1.0}]  # a method's: not kept
    points = load_points(records, fixed_cfg=2.0)
    assert points[["method", "variant"]].values.tolist() == [["dit-ft", "guided"], ["dit-ft", "unguided"]]


def test_guidance_interval_points_are_a_third_variant_of_the_static_envelope():
    b = np.linspace(-0.1, 0.1, 50)
    records = [_record("dit", "10", 10, 1.0, 5.0, list(5.0 + b), ft="0.00"),
               {**_record("dit", "10", 10, 0.5, 5.2, list(5.2 + b), ft="0.00"), "cfg_scale": 1.0},
               _record("dit", "10i", 10, 0.75, 4.5, list(4.5 + b), ft="0.00"),
               _record("dit-ft", "10", 10, 1.0, 4.0, list(4.0 + b)),
               _record("dit-ft", "5", 5, 0.5, 5.0, list(5.0 + b), 0.5),
               _record("dydit", "0.50", 10, 0.8, 4.8, list(4.8 + b), 0.5)]
    points = load_points(records, fixed_cfg=2.0)
    dit = points[points["method"] == "dit"].sort_values(["budget", "variant"])
    assert dit[["budget", "variant"]].values.tolist() == [["10", "guided"], ["10", "unguided"], ["10i", "interval"]]
    rows = compare_with_envelopes(points)
    # the interval point (4.5 at 0.75) beats every guided rung at 0.8: DyDiT's 4.8 saves nothing against dit
    assert rows.iloc[0]["compute_saved_vs_dit"] < 0
    assert rows.iloc[0]["executed_compute_ratio"] == pytest.approx(0.8)  # over the fully guided full-step point
    claims = pd.DataFrame(columns=["method", "model", "resolution", "setting", "fid", "compute_ratio"])
    regime = claims_ledger(points, rows, claims, full_steps=10)
    regime = regime[regime["claim"].str.startswith("guidance regime")].iloc[0]
    assert regime["estimate"] == pytest.approx(5.2 / 5.0)  # unguided over fully guided: the interval is not it


def test_selected_guidance_takes_each_point_at_its_own_scale():
    at = {1.5: 5.0, 2.0: 4.0}
    records = [{**_record("dydit", "0.50", 10, 0.7, fid, [fid] * 4), "cfg_scale": cfg} for cfg, fid in at.items()]
    records.append(_record("dit", "10", 10, 1.0, 6.0, [6.0] * 4, ft="0.00"))  # no selected scale: left out
    points = load_points(records, fixed_cfg=1.5, selected={("dydit", "0.50", 10, "1.00"): 2.0})
    assert points[["method", "fid"]].values.tolist() == [["dydit", 4.0]]
    assert load_points(records, fixed_cfg=1.5)["fid"].tolist() == [5.0]


def test_a_claims_verdict_is_given_at_every_training_compute_the_plateau_runs_measured(study):
    from ditpareto.verdicts import load_plateau

    b = np.linspace(-0.1, 0.1, 50)
    records = [_record("dydit", "0.50", 10, 0.7, 4.6, list(4.6 + b), 0.5, ft="0.50"),  # -8 %: reproduced
               _record("dydit", "0.50", 10, 0.7, 4.2, list(4.2 + b), 0.5, ft="2.00"),
               _record("dydit", "0.50", 10, 0.7, 9.9, list(9.9 + b), 0.5, ft="1.00s1")]  # a seed repeat: not here
    plateau = load_plateau(records, fixed_cfg=2.0)
    assert sorted(plateau["multiple"]) == [0.5, 2.0]
    claims = pd.DataFrame([
        {"method": "dit", "model": "DiT-XL/2", "resolution": 256, "setting": "250", "fid": 2.27, "compute_ratio": 1},
        {"method": "dydit", "model": "DiT-XL/2", "resolution": 256, "setting": "lambda=0.5", "fid": 2.07,
         "compute_ratio": 0.488}])
    ledger = claims_ledger(study, compare_with_envelopes(study), claims, full_steps=10, plateau=plateau)
    row = ledger[ledger["claim"].str.startswith("lambda=0.5")].iloc[0]
    assert row["verdict_by_training"] == ("0.5x: reproduced; 1x: better than claimed; 2x: better than claimed")
    alone = claims_ledger(study, compare_with_envelopes(study), claims, full_steps=10)
    assert alone.iloc[0]["verdict_by_training"].startswith("1x: better than claimed (no plateau")


def test_recorded_plateau_points_give_the_same_budget_curve_and_must_pair(study, tmp_path):
    """A long run's plateau points, written with their replicates and read back, give the default the outcome at
    0.5x and 2x its own run would; a table with another N, replicate count or bootstrap seed is refused."""
    import json

    from ditpareto.study import read_plateau_table
    from ditpareto.verdicts import load_plateau, plateau_rows, recorded_plateau

    b = np.linspace(-0.1, 0.1, 50)
    extra = {"params": {"num_samples": 50, "sampler": "ddim"}, "bootstrap": {"seed": 0}, "train_gmacs": 10.0,
             "checkpoint_sha256": "ab" * 32}
    records = [{**_record("dydit", "0.50", 10, 0.7, 4.6, list(4.6 + b), 0.5, ft="0.50"), **extra},
               {**_record("dydit", "0.50", 10, 0.7, 4.2, list(4.2 + b), 0.5, ft="2.00"), **extra},
               {**_record("dit", "10", 10, 1.0, 5.0, list(5.0 + b), ft="0.00"), "checkpoint_sha256": "cd" * 32}]
    rows = plateau_rows(records, fixed_cfg=2.0)
    assert [(r["multiple"], r["base_sha256"], r["num_samples"]) for r in rows] == [(0.5, "cd" * 32, 50),
                                                                                   (2.0, "cd" * 32, 50)]
    path = tmp_path / "plateau.json"
    path.write_text(json.dumps({"rows": rows}))
    read = read_plateau_table(path)
    points = study.assign(num_samples=50)
    recorded = recorded_plateau(read, points, bootstrap_seed=0)
    own = load_plateau(records, fixed_cfg=2.0)
    assert recorded["fid"].tolist() == own["fid"].tolist() and set(recorded["source"]) == {"recorded"}
    claims = pd.DataFrame([
        {"method": "dit", "model": "DiT-XL/2", "resolution": 256, "setting": "250", "fid": 2.27, "compute_ratio": 1},
        {"method": "dydit", "model": "DiT-XL/2", "resolution": 256, "setting": "lambda=0.5", "fid": 2.07,
         "compute_ratio": 0.488}])
    ledger = claims_ledger(points, compare_with_envelopes(points), claims, full_steps=10, plateau=recorded)
    assert ledger.iloc[0]["verdict_by_training"] == (
        "0.5x: reproduced; 1x: better than claimed; 2x: better than claimed (the other multiples: the recorded "
        "plateau fine-tunes)")
    with pytest.raises(ValueError, match="has N 50 and 50 replicates, this run's seed 0 has N 1000"):
        recorded_plateau(read, study.assign(num_samples=1000), bootstrap_seed=0)
    with pytest.raises(ValueError, match="bootstrap seed 0, this run with 7: not paired"):
        recorded_plateau(read, points, bootstrap_seed=7)


def test_a_recorded_plateau_table_is_validated_and_checked_for_staleness(tmp_path):
    import json

    from ditpareto.study import read_plateau_table, stale_plateau_rows

    row = {"method": "dydit", "budget": "0.50", "steps": 10, "seed": 0, "multiple": 0.5, "cfg_scale": 1.25,
           "fid": 4.0, "num_samples": 1000, "bootstrap_seed": 0, "replicates": [4.0, 4.1],
           "checkpoint_sha256": "ab" * 32, "base_sha256": "cd" * 32, "sampler": "ddim", "train_gmacs": 10500.0}
    path = tmp_path / "plateau.json"
    for bad, message in [({"fid": float("nan")}, "non-finite"), ({"multiple": 1.0}, "multiple"),
                         ({"replicates": []}, "no or non-finite replicates"), ({"fid": "x"}, "non-numeric")]:
        path.write_text(json.dumps({"rows": [{**row, **bad}]}))
        with pytest.raises(ValueError, match=message):
            read_plateau_table(path)
    path.write_text(json.dumps({"rows": [{k: v for k, v in row.items() if k != "sampler"}]}))
    with pytest.raises(ValueError, match=r"row 0 lacks \['sampler'\]"):
        read_plateau_table(path)
    path.write_text(json.dumps({"rows": [row, row]}))
    with pytest.raises(ValueError, match="repeated"):
        read_plateau_table(path)
    path.write_text("{}")
    with pytest.raises(ValueError, match="has no rows"):
        read_plateau_table(path)
    path.write_text(json.dumps({"rows": [row]}))
    rows = read_plateau_table(path)
    config = {"base": {"source": "checkpoint", "sha256": "cd" * 32}, "finetune": {"train_gmacs": 21000},
              "sampling": {"sampler": "ddim"}, "methods": {"dydit": {}}}
    stale_plateau_rows(path, rows, config, "re-record")
    for change, what in [({"base": {"source": "checkpoint", "sha256": "ee" * 32}}, "from base cdcdcdcdcdcd"),
                         ({"finetune": {"train_gmacs": 30000}}, "train_gmacs 10500; the study uses eeee|15000"),
                         ({"sampling": {"sampler": "ddpm"}}, "sampler ddim")]:
        with pytest.raises(ValueError, match=f"stale for dydit/0.50 at 0.5x: .*({what}).*re-record"):
            stale_plateau_rows(path, rows, {**config, **change}, "re-record")
    stale_plateau_rows(path, rows, {**config, "methods": {"dit": {}}}, "re-record")  # a method not run: not checked


def test_the_guidance_regime_figure_stands_beside_every_verdict():
    b = np.linspace(-0.1, 0.1, 50)
    records = [_record("dit", "10", 10, 1.0, 5.0, list(5.0 + b), ft="0.00"),
               {**_record("dit", "10", 10, 0.5, 5.2, list(5.2 + b), ft="0.00"), "cfg_scale": 1.0},
               _record("dit-ft", "10", 10, 1.0, 4.0, list(4.0 + b)),
               _record("dit-ft", "5", 5, 0.5, 5.0, list(5.0 + b), 0.5),
               _record("dydit", "0.50", 10, 0.7, 4.2, list(4.2 + b), 0.5)]
    points = load_points(records, fixed_cfg=2.0)
    claims = pd.DataFrame(columns=["method", "model", "resolution", "setting", "fid", "compute_ratio"])
    ledger = claims_ledger(points, compare_with_envelopes(points), claims, full_steps=10)
    regime = ledger[ledger["claim"].str.startswith("guidance regime")].iloc[0]
    assert regime["estimate"] == pytest.approx(1.04) and regime["verdict"] == "worse than claimed"
    assert regime["executed_compute_ratio"] == pytest.approx(0.5)  # CFG 1: one network call a step
    verdict = ledger[ledger["claim"].str.startswith("beats")].iloc[0]
    assert verdict["regime"].startswith("guidance regime 1.04x") and "may not transfer" in verdict["regime"]
    assert np.isnan(verdict["p_holm"]) or verdict["p_holm"] >= verdict["p_value"]


def test_where_the_selection_chose_cfg_1_at_full_steps_the_unguided_base_is_the_comparator():
    """The held-out selection may choose CFG 1 for the untouched DiT at full steps: the claims then compare with
    that unguided point, executed compute stays relative to the DiT guided at every step (twice the unguided
    compute), and the regime figure says guidance did not help."""
    b = np.linspace(-0.1, 0.1, 50)
    records = [{**_record("dit", "10", 10, 0.5, 5.0, list(5.0 + b), ft="0.00"), "cfg_scale": 1.0},
               {**_record("dit", "5", 5, 0.5, 6.0, list(6.0 + b), 0.5, ft="0.00"), "cfg_scale": 3.0},
               _record("dit-ft", "10", 10, 1.0, 4.0, list(4.0 + b)),
               _record("dit-ft", "5", 5, 0.5, 5.0, list(5.0 + b), 0.5),
               _record("dydit", "0.50", 10, 0.5, 4.5, list(4.5 + b), 0.5)]
    selected = {("dit", "10", 10, "0.00"): 1.0, ("dit", "5", 5, "0.00"): 3.0, ("dit-ft", "10", 10, "1.00"): 2.0,
                ("dit-ft", "5", 5, "1.00"): 2.0, ("dydit", "0.50", 10, "1.00"): 2.0}
    points = load_points(records, fixed_cfg=1.5, selected=selected)
    comparisons = compare_with_envelopes(points)
    assert comparisons.iloc[0]["executed_compute_ratio"] == pytest.approx(0.5)  # 0.5 / (2 x 0.5)
    claims = pd.DataFrame([
        {"method": "dit", "model": "DiT-XL/2", "resolution": 256, "setting": "250", "fid": 2.27, "compute_ratio": 1},
        {"method": "dydit", "model": "DiT-XL/2", "resolution": 256, "setting": "lambda=0.5", "fid": 2.07,
         "compute_ratio": 0.488}])
    ledger = claims_ledger(points, comparisons, claims, full_steps=10)
    claim = ledger[ledger["claim"].str.startswith("lambda=0.5")].iloc[0]
    assert claim["estimate"] == pytest.approx(4.5 / 5.0 - 1) and claim["comparator_fid"] == 5.0
    assert "at CFG 1" in claim["basis"]
    regime = ledger[ledger["claim"].str.startswith("guidance regime")].iloc[0]
    assert regime["estimate"] == 1.0 and "chose CFG 1" in regime["regime"]


def test_the_verdicts_step_records_its_plateau_and_a_shorter_run_reads_it_back(tmp_path):
    """`verdicts --plateau-out` writes the run's plateau points; a run without them, given that table (pinned by
    sha256), states the same outcomes at 0.5x and 2x; a wrong sha256 is refused."""
    import hashlib
    import json

    from ditpareto.errors import InputError
    from ditpareto.jobs.tables import verdicts

    b = np.linspace(-0.1, 0.1, 50)
    extra = {"params": {"num_samples": 50, "sampler": "ddim"}, "bootstrap": {"seed": 0}}
    grid = [_record("dit", "10", 10, 1.0, 5.0, list(5.0 + b), ft="0.00"),
            _record("dit-ft", "10", 10, 1.0, 4.0, list(4.0 + b)),
            _record("dit-ft", "5", 5, 0.5, 5.0, list(5.0 + b), 0.5),
            _record("dydit", "0.50", 10, 0.7, 4.2, list(4.2 + b), 0.5)]
    plateau = [_record("dydit", "0.50", 10, 0.7, 4.6, list(4.6 + b), 0.5, ft="0.50"),
               _record("dydit", "0.50", 10, 0.7, 4.2, list(4.2 + b), 0.5, ft="2.00")]
    paths = []
    for i, record in enumerate(grid + plateau):
        paths.append(tmp_path / f"r{i}.json")
        paths[-1].write_text(json.dumps({**record, **extra}))
    claims = tmp_path / "claims.csv"
    pd.DataFrame([
        {"method": "dit", "model": "DiT-XL/2", "resolution": 256, "setting": "250", "fid": 2.27, "compute_ratio": 1},
        {"method": "dydit", "model": "DiT-XL/2", "resolution": 256, "setting": "lambda=0.5", "fid": 2.07,
         "compute_ratio": 0.488}]).to_csv(claims, index=False)
    common = {"claims": str(claims), "comparisons": str(tmp_path / "c.csv"), "fixed_cfg": 2.0, "full_steps": 10}
    verdicts(metrics=[str(p) for p in paths], out=str(tmp_path / "long.csv"),
             plateau_out=str(tmp_path / "plateau.json"), **common)
    recorded = tmp_path / "plateau.json"
    assert len(json.loads(recorded.read_text())["rows"]) == 2
    sha = hashlib.sha256(recorded.read_bytes()).hexdigest()
    verdicts(metrics=[str(p) for p in paths[:len(grid)]], out=str(tmp_path / "short.csv"),
             plateau_recorded=str(recorded), plateau_sha256=sha, **common)
    long, short = (pd.read_csv(tmp_path / f"{n}.csv").iloc[0]["verdict_by_training"] for n in ("long", "short"))
    assert long == "0.5x: reproduced; 1x: better than claimed; 2x: better than claimed"
    assert short == long + " (the other multiples: the recorded plateau fine-tunes)"
    with pytest.raises(InputError, match="has sha256 .*, expected 0000"):
        verdicts(metrics=[str(p) for p in paths[:len(grid)]], out=str(tmp_path / "short.csv"),
                 plateau_recorded=str(recorded), plateau_sha256="0" * 64, **common)


def test_a_study_of_static_ladders_only_says_it_has_no_claims_to_test(tmp_path):
    import json

    from ditpareto.jobs.tables import verdicts

    b = list(np.linspace(3.9, 4.1, 20))
    paths = []
    for i, record in enumerate([_record("dit", "10", 10, 1.0, 4.0, b, ft="0.00"), _record("dit-ft", "10", 10, 1.0, 4.0, b)]):
        paths.append(tmp_path / f"r{i}.json")
        paths[-1].write_text(json.dumps(record))
    claims = tmp_path / "claims.csv"
    claims.write_text("method,model,resolution,setting,fid,compute_ratio\ndit,DiT-XL/2,256,250,2.27,1\n")
    result = verdicts(metrics=[str(p) for p in paths], claims=str(claims), out=str(tmp_path / "v.csv"),
                      comparisons=str(tmp_path / "c.csv"), fixed_cfg=2.0, full_steps=10)
    assert result["note"] == "no claims to test" and result["claims"] == 0
    assert "verdict" in pd.read_csv(tmp_path / "v.csv").columns


def test_a_video_claim_is_judged_at_the_budget_nearest_its_compute_within_the_floor_tolerance():
    """video_claims_ledger: the method's budget nearest the claimed compute ratio, FVD relative to the untouched base
    at full steps with a paired CI, and the real-vs-real floor as tolerance: a point within it reproduces "no
    significant drop", one far above it is worse than claimed."""
    import numpy as np
    import pandas as pd

    from ditpareto.verdicts import video_claims_ledger

    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.05, 200)

    def point(method, budget, steps, gmacs, fvd):
        return {"method": method, "budget": budget, "steps": steps, "seed": 0, "cfg_scale": 1.5, "variant": "guided",
                "gmacs": gmacs, "fid": fvd, "precision": np.nan, "recall": np.nan, "num_samples": 200,
                "nominal_compute_ratio": gmacs / 10, "finetune_source": None, "replicates": fvd + noise}

    points = pd.DataFrame([point("dit", "10", 10, 10.0, 20.0), point("flexidit", "0.90", 10, 3.0, 20.2),
                           point("flexidit", "0.50", 10, 6.0, 20.1), point("flexdit", "0.61", 10, 4.5, 30.0)])
    claims = pd.DataFrame([
        {"method": "flexidit", "model": "m", "datasets": "d", "claim": "up to 75 %", "compute_ratio": 0.25,
         "quality_change": 0.0},
        {"method": "flexdit", "model": "m", "datasets": "d", "claim": "-56 %", "compute_ratio": 0.44,
         "quality_change": 0.0}])
    ledger = video_claims_ledger(points, pd.DataFrame(), claims, 10, floor=2.0).set_index("method")
    assert ledger.loc["flexidit", "toy_analogue"].startswith("flexidit 0.90")  # 30 % executed: nearest 25 %
    assert ledger.loc["flexidit", "tolerance"] == pytest.approx(0.1)  # floor 2 / base 20
    assert ledger.loc["flexidit", "verdict"] == "reproduced" and ledger.loc["flexdit", "verdict"] == "worse than claimed"
    assert ledger.loc["flexdit", "compute_mismatch"] == False  # noqa: E712  (45 % executed vs 44 % claimed)


def test_dominance_pairs_every_series_at_no_more_compute_and_keeps_other_samplers(study):
    """FORA at 0.5 GMACs (FID 4.5) beats DyDiT at 0.7 (4.2 + 0.5 = 4.7, paired); the DPM-Solver ladder is its own
    series (kept only with ``samplers``), and the study sampler's ladders (dit, dit-ft) are not series."""
    from ditpareto.verdicts import BEATS, LOSES, dominance

    b = np.linspace(-0.1, 0.1, 50)
    records = [_record("fora", "2", 10, 0.5, 4.5, list(4.5 + b), 0.5, ft="0.00"),
               _record("dit", "5+dpmpp-2m", 5, 0.5, 4.0, list(4.0 + b), 0.5, ft="0.00"),
               _record("dydit", "0.50", 10, 0.7, 4.7, list(4.7 + b), 0.5)]
    points = load_points(records, fixed_cfg=2.0, samplers=True)
    assert set(load_points(records, fixed_cfg=2.0)["budget"]) == {"2", "0.50"}
    pairs = dominance(points)
    assert set(pairs["series"]) | set(pairs["other_series"]) == {"fora", "dit+dpmpp-2m", "dydit"}
    by = pairs.set_index(["series", "other_series"])
    assert by.loc[("fora", "dydit"), "outcome"] == BEATS
    assert by.loc[("fora", "dydit"), "diff"] == pytest.approx(-0.2)
    assert by.loc[("fora", "dit+dpmpp-2m"), "outcome"] == LOSES  # the same compute: both directions
    assert by.loc[("dit+dpmpp-2m", "fora"), "outcome"] == BEATS
    assert ("dydit", "fora") not in by.index  # DyDiT spends more: no claim either way
    assert (pairs["gmacs_per_image"] <= pairs["other_gmacs_per_image"] * 1.05 + 1e-12).all()
