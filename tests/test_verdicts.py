"""Paired bootstrap CIs, the static envelope comparisons and the claims ledger."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ditpareto.bootstrap import (
    bootstrap_fid, bootstrap_set_metrics, frechet_distance, manifold_membership, mmd2, mmd2_replicates,
    bootstrap_ci, paired_indices,
)
from ditpareto.verdicts import VERDICTS, answer, claims_ledger, compare_with_envelopes, load_points

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
    low, high = bootstrap_ci(fid, bootstrap_fid(generated, REFERENCE, 200, seed=0))
    assert low <= fid <= high and high - low > 0


def test_the_ci_of_a_nearly_perfect_set_contains_its_fid_despite_the_resampling_bias():
    """A set from the reference's own distribution, small for its dimension: the resampled sets' FIDs all lie
    above the estimate (duplicates shrink the spread), so only the bias-moved interval contains it."""
    generated = np.random.default_rng(5).normal(size=(150, 8))
    fid = frechet_distance(generated.mean(0), np.cov(generated, rowvar=False), REFERENCE.mean(0),
                           np.cov(REFERENCE, rowvar=False))
    replicates = bootstrap_fid(generated, REFERENCE, 200, seed=0)
    assert np.percentile(replicates, 2.5) > fid  # the plain percentile interval misses the estimate
    low, high = bootstrap_ci(fid, replicates)
    assert low <= fid <= high
    assert all(np.isnan(bootstrap_ci(float("nan"), replicates)) & np.isnan(bootstrap_ci(fid, [float("nan")])))


def test_the_paired_ci_of_identical_sample_sets_is_zero():
    generated = features(0.3)
    a = bootstrap_fid(generated, REFERENCE, 100, seed=0)
    b = bootstrap_fid(generated.copy(), REFERENCE, 100, seed=0)
    assert bootstrap_ci(0.0, a - b) == (0.0, 0.0)


def test_two_methods_differing_only_in_noise_get_a_ci_containing_zero():
    """Two sample sets from the same distribution (as two methods identical but for sampling noise): the paired
    difference's CI contains 0; a real shift is detected."""
    def fid(x):
        return frechet_distance(x.mean(0), np.cov(x, rowvar=False), REFERENCE.mean(0), np.cov(REFERENCE, rowvar=False))

    same_a, same_b, far = features(0.2, seed=1), features(0.2, seed=2), features(0.6, seed=2)
    diff = bootstrap_fid(same_a, REFERENCE, 200, 0) - bootstrap_fid(same_b, REFERENCE, 200, 0)
    low, high = bootstrap_ci(fid(same_a) - fid(same_b), diff)
    assert low < 0 < high
    shifted = bootstrap_fid(far, REFERENCE, 200, 0) - bootstrap_fid(same_a, REFERENCE, 200, 0)
    assert bootstrap_ci(fid(far) - fid(same_a), shifted)[0] > 0


def test_kid_precision_recall_intervals_bracket_their_full_set_values_and_see_a_shift():
    import torch
    from torch_fidelity.metric_kid import kernel_mmd
    from torch_fidelity.metric_prc import prc_features_to_metric

    reference, close, far = REFERENCE[:600], features(0.1), features(1.5, seed=2)
    membership = manifold_membership(close, reference, 3)
    prc = prc_features_to_metric(torch.from_numpy(close), torch.from_numpy(reference), prc_neighborhood=3,
                                 verbose=False)
    point = {"kid": kernel_mmd(close, reference), "precision": prc["precision"], "recall": prc["recall"]}
    ci = {name: bootstrap_ci(point[name], v)
          for name, v in bootstrap_set_metrics(close, reference, 100, 0, membership).items()}
    in_reference, in_generated = membership
    assert (float(in_reference.mean()), float(in_generated.mean())) == (prc["precision"], prc["recall"])  # exact
    assert ci["kid"][0] <= kernel_mmd(close, reference) <= ci["kid"][1]
    assert ci["precision"][0] <= prc["precision"] <= ci["precision"][1]
    assert ci["recall"][0] <= prc["recall"] <= ci["recall"][1]
    assert mmd2(close, reference) == pytest.approx(kernel_mmd(close, reference), rel=1e-9)
    unequal = bootstrap_ci(mmd2(close[:300], reference), mmd2_replicates(
        close[:300], reference, paired_indices(300, 50, 0), paired_indices(600, 50, 1)))  # sizes may differ
    assert unequal[0] <= mmd2(close[:300], reference) <= unequal[1]
    far_membership = manifold_membership(far, reference, 3)
    far_point = {"kid": kernel_mmd(far, reference), "precision": float(far_membership[0].mean()),
                 "recall": float(far_membership[1].mean())}
    shifted = {name: bootstrap_ci(far_point[name], v)
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
    assert np.isnan(compared.loc["dydit", "compute_saved_vs_dit"])  # below the untouched ladder's best FID


def test_every_verdict_row_names_its_basis(study):
    claims = pd.DataFrame([
        {"method": "dit", "model": "DiT-XL/2", "resolution": 256, "setting": "250", "fid": 2.27, "compute_ratio": 1},
        {"method": "dydit", "model": "DiT-XL/2", "resolution": 256, "setting": "lambda=0.5", "fid": 2.07,
         "compute_ratio": 0.488},
        {"method": "flexdit", "model": "DiT-XL/2", "resolution": 512, "setting": "r in [0.61,0.86]", "fid": 2.96,
         "compute_ratio": 0.545},
    ])
    ledger = claims_ledger(study, compare_with_envelopes(study), claims, full_steps=10)
    assert set(ledger["verdict"]) <= set(VERDICTS)
    assert ledger["basis"].str.len().min() > 10 and ledger["basis"].notna().all()
    by = ledger.set_index("claim")
    claim = next(c for c in by.index if c.startswith("lambda=0.5"))
    # ours: 4.2 / 5.0 - 1 = -16 %, claimed -8.8 %: supported
    assert by.loc[claim, "verdict"] == "supported" and by.loc[claim, "estimate"] == pytest.approx(-0.16)
    assert not any("512px" in c for c in by.index)  # 512-px claims have no toy analogue at 64 tokens
    beats = ledger[ledger["claim"].str.startswith("beats fewer steps")].set_index("method")["verdict"]
    assert beats.to_dict() == {"dydit": "supported", "flexdit": "contradicted"}


def test_a_method_without_an_envelope_or_with_only_parity_points_still_gets_an_inconclusive_row(study):
    records = [_record("dit", "10", 10, 1.0, 5.0, [5.0] * 4, ft="0.00"),
               _record("dit-ft", "10", 10, 1.0, 4.0, [4.0] * 4),  # one rung: no envelope
               _record("flexidit", "0.00", 10, 1.0, 4.1, [4.1] * 4),  # parity point only
               _record("dydit", "0.50", 10, 0.5, 4.2, [4.2] * 4, 0.5)]
    points = load_points(records, fixed_cfg=2.0)
    ledger = claims_ledger(points, compare_with_envelopes(points), pd.DataFrame(
        columns=["method", "model", "resolution", "setting", "fid", "compute_ratio"]), full_steps=10)
    assert ledger.set_index("method")["verdict"].to_dict() == {"dydit": "inconclusive", "flexidit": "inconclusive"}
    assert ledger["basis"].str.contains("no dit-ft step ladder").all()


@pytest.mark.parametrize("n, dim", [(600, 8), (6, 40)])
def test_bootstrap_fid_equals_the_frechet_formula_on_each_replicate(n, dim):
    """The replicates' FID (square root of the reference covariance once, an n x n eigenproblem when the sample
    is smaller than the feature dimension) equals the usual formula on the resampled statistics."""
    rng = np.random.default_rng(3)
    generated, reference = rng.normal(size=(n, dim)) + 0.2, rng.normal(size=(900, dim))
    mu, sigma = reference.mean(0), np.cov(reference, rowvar=False)
    fast = bootstrap_fid(generated, (mu, sigma), 3, seed=5)
    for value, idx in zip(fast, paired_indices(n, 3, 5)):
        sample = generated[idx]
        assert value == pytest.approx(frechet_distance(sample.mean(0), np.cov(sample, rowvar=False), mu, sigma),
                                      rel=1e-6, abs=1e-6)


def test_finetune_seed_noise_is_measured_and_widens_the_intervals_of_its_budget(study):
    from ditpareto.verdicts import finetune_seed_noise, widen

    records = [_record("dydit", "0.50", 10, 0.7, fid, [fid] * 50, 0.5, ft=ft)
               for ft, fid in (("1.00", 4.2), ("1.00s1", 4.6), ("1.00s2", 4.0))]
    noise = finetune_seed_noise(records)
    assert noise.set_index("method").loc["dydit", "finetune_seeds"] == 3
    assert noise.set_index("method").loc["dydit", "finetune_seed_std"] == pytest.approx(np.std([4.2, 4.6, 4.0], ddof=1))
    plain = compare_with_envelopes(study).set_index("method")
    wide = compare_with_envelopes(study, noise).set_index("method")
    assert wide.loc["dydit", "diff_ci_low"] < plain.loc["dydit", "diff_ci_low"]
    assert wide.loc["dydit", "diff_ci_high"] > plain.loc["dydit", "diff_ci_high"]
    assert wide.loc["flexdit", "diff_ci_low"] == plain.loc["flexdit", "diff_ci_low"]  # not repeated: unchanged
    assert widen(1.0, 0.5, 1.5, 0.0) == (0.5, 1.5)
    assert load_points(records, fixed_cfg=2.0)["fid"].tolist() == [4.2]  # repeats stay out of the grid rows


def test_a_full_compute_point_and_a_shared_fine_tune_take_the_spread_of_the_fine_tune_they_sample():
    from ditpareto.verdicts import _noise_std

    noise = pd.DataFrame([{"method": "dydit", "budget": "0.50", "steps": 10, "finetune_seed_std": 0.3,
                           "finetune_seeds": 3},
                          {"method": "flexidit", "budget": "0.50", "steps": 10, "finetune_seed_std": 0.2,
                           "finetune_seeds": 3}])
    assert _noise_std(noise, "dydit", "full@0.50") == 0.3 and _noise_std(noise, "dydit", "0.70") == 0.0
    assert _noise_std(noise, "flexidit", "0.00") == 0.2  # one fine-tune serves every FlexiDiT budget


def test_selected_guidance_takes_each_point_at_its_own_scale():
    at = {1.5: 5.0, 2.0: 4.0}
    records = [{**_record("dydit", "0.50", 10, 0.7, fid, [fid] * 4), "cfg_scale": cfg} for cfg, fid in at.items()]
    records.append(_record("dit", "10", 10, 1.0, 6.0, [6.0] * 4, ft="0.00"))  # no selected scale: left out
    points = load_points(records, fixed_cfg=1.5, selected={("dydit", "0.50", 10, "1.00"): 2.0})
    assert points[["method", "fid"]].values.tolist() == [["dydit", 4.0]]
    assert load_points(records, fixed_cfg=1.5)["fid"].tolist() == [5.0]
