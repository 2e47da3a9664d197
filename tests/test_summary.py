"""The one-page summary and the README's generated ledger."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ditpareto.summary import BEGIN, END, ledger_markdown, read_block, replace_block
from ditpareto.verdicts import REGIME_CLAIM

REPO = Path(__file__).resolve().parents[1]
FROZEN = REPO / "results/published/default-verdicts.csv"


def _ledger():
    common = {"precision": 0.5, "recall": 0.6, "comparator_precision": 0.63, "comparator_recall": 0.47,
              "compute_mismatch": False, "verdict_holm": "inconclusive", "regime": "guidance regime 1.01x",
              "verdict_by_training": "0.5x: reproduced; 1x: inconclusive"}
    return pd.DataFrame([
        {**common, "method": "dydit", "claim": "lambda=0.7 (DiT-XL/2 256px): FID 2.12 vs DiT 2.27 (-6.6%)",
         "estimate": 0.004, "ci_low": -0.071, "ci_high": 0.078, "verdict": "inconclusive",
         "executed_compute_ratio": 0.73},
        {**common, "method": "flexidit", "claim": "beats fewer steps (FID minus the dit-ft envelope)",
         "estimate": -1.5, "ci_low": -1.88, "ci_high": -1.07, "verdict": "reproduced", "verdict_holm": "reproduced",
         "executed_compute_ratio": 0.27, "compute_mismatch": True},
        {**common, "method": "dit", "claim": REGIME_CLAIM, "estimate": 1.01, "ci_low": 0.99, "ci_high": 1.03,
         "verdict": "worse than claimed", "executed_compute_ratio": 0.5},
    ])


def test_the_ledger_table_formats_each_kind_of_row():
    text = ledger_markdown(_ledger())
    lines = text.splitlines()
    assert len(lines) == 5 and lines[0].startswith("| method | claim |")
    assert "+0.4% [−7.1%, +7.8%]" in lines[2] and "| 73% |" in lines[2]
    assert "−1.50 [−1.88, −1.07]" in lines[3] and "27% (≠ claimed)" in lines[3] and "| reproduced |" in lines[3]
    assert "1.01× [0.99×, 1.03×]" in lines[4] and "0.50 / 0.60 vs 0.63 / 0.47" in lines[4]


def test_the_landing_table_names_claims_in_a_few_words():
    from ditpareto.summary import _short_claim

    assert _short_claim("lambda=0.7 (DiT-XL/2 256px): FID 2.12 vs DiT 2.27 (-6.6%) at 71% compute") == \
        "lambda=0.7: −6.6 % FID at 71 %"
    assert _short_claim("beats fewer steps: lower FID") == "beats fewer steps"
    assert _short_claim(REGIME_CLAIM) == "guidance regime"


def test_the_answer_in_three_lines():
    from ditpareto.summary import answer_lines

    lines = answer_lines(_ledger())
    assert len(lines) == 3
    assert lines[0].endswith("for a training-free baseline): flexidit reproduced.")
    assert lines[1] == "The papers' 1 headline claim: 1 inconclusive."
    assert "1.01×" in lines[2] and "guidance hardly matters here" in lines[2]
    strong = _ledger().assign(verdict=["better than claimed", "reproduced", "reproduced"],
                              verdict_holm=["inconclusive", "reproduced", "reproduced"])
    lines = answer_lines(strong)
    assert "guidance matters here" in lines[2] and "1 better than claimed" in lines[1]
    assert answer_lines(strong.iloc[:1])[0].endswith("not tested in this run.")


def test_the_summary_step_writes_the_page_and_rewrites_only_the_readme_block(tmp_path):
    from ditpareto.errors import InputError
    from ditpareto.jobs.tables import summary

    verdicts = tmp_path / "verdicts.csv"
    _ledger().to_csv(verdicts, index=False)
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{BEGIN}\nstale\n{END}\n\nthe rest\n")
    metrics = tmp_path / "metrics.csv"
    pd.DataFrame({"method": ["dit"], "budget": ["10"], "steps": [10], "cfg_scale": [1.5], "seed": [0],
                  "gmacs_per_image": [0.888], "fid": [3.47], "extra": [1]}).to_csv(metrics, index=False)
    summary(verdicts=str(verdicts), out=str(tmp_path / "out/summary.md"), scale="toy scale: test",
            figures=[str(tmp_path / "figures/pareto.png")], readme=str(readme), metrics=str(metrics),
            ledger_html=str(tmp_path / "verdicts.html"), metrics_html=str(tmp_path / "metrics.html"),
            config_json='{"device": "cpu", "sampling": {"steps": [10, 5]}}', config_out=str(tmp_path / "run.yaml"),
            answer_html=str(tmp_path / "answer.html"))
    answer = (tmp_path / "answer.html").read_text()
    assert answer.startswith("<div") and "<html" not in answer and "toy scale: test" in answer
    assert answer.count("<tr>") == 4 and "−1.50 [−1.88, −1.07]" in answer  # header + three rows
    assert "device: cpu" in (tmp_path / "run.yaml").read_text()
    ledger = (tmp_path / "verdicts.html").read_text()
    assert "<table" in ledger and "reproduced" in ledger and "toy scale: test" in ledger
    grid = (tmp_path / "metrics.html").read_text()
    assert "<table" in grid and "3.470" in grid and "extra" not in grid
    page = (tmp_path / "out/summary.md").read_text()
    assert "**Scale: toy scale: test.**" in page and ledger_markdown(_ledger()) in page
    assert "guidance regime 1.01x" in page and "(../figures/pareto.png)" in page
    assert "- dydit lambda=0.7: −6.6 % FID at" not in page  # the test ledger's claim has no compute: kept whole
    assert "verdict at the training computes measured" in page and "0.5x: reproduced; 1x: inconclusive" in page
    text = readme.read_text()
    assert text.startswith("# title") and text.endswith("the rest\n") and "stale" not in text
    assert read_block(text) == ledger_markdown(_ledger())
    with pytest.raises(InputError, match="markers are missing"):
        readme.write_text("no markers")
        summary(verdicts=str(verdicts), out=str(tmp_path / "s.md"), scale="toy", readme=str(readme))
    with pytest.raises(ValueError):
        replace_block("no markers", "x")


def test_the_readme_ledger_is_the_frozen_default_ledger():
    """README.md's ledger is generated from results/published/default-verdicts.csv (the default study's
    verdicts.csv, frozen): hand edits or a stale copy fail here."""
    assert read_block((REPO / "README.md").read_text()) == ledger_markdown(pd.read_csv(FROZEN))
