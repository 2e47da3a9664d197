# ditpareto: FlexDiT, DyDiT, FlexiDiT and the fewer-steps DiT baseline on one measured FID-vs-compute pareto.
#
# Path scheme (one scheme, ditpareto.study; logs/ and results/benchmarks/ mirror it under <rule>/). A grid point is
# P = {method}/budget~{budget}/steps~{steps}/ft~{ft}/cfg~{cfg}/seed~{seed}; a fine-tune run is
# R = [budget~{budget}/]ft~{ft} (ft: training compute as a multiple of finetune.train_gmacs).
#   resources/data/{draw}.npz                          independent draws: train, reference, floor, extractor[_val]
#   resources/pretrained/base.pt                       the validated pretrained DiT every method starts from
#   resources/fid/extractor.pt                         FID feature extractor (shipped or trained by the pipeline)
#   results/checkpoints/{method}/converted.pt          base DiT converted to the method (its initialisation)
#   results/checkpoints/{method}/R/finetuned.pt        the fine-tune a grid point samples (+ .json training record)
#   results/training/{method}/R/loss.csv               fine-tuning loss curves
#   results/samples/P.npz                              samples (uint8) + .record.json
#   results/metrics/P.json                             FID/KID/IS/P/R with paired-bootstrap CIs, GMACs, training MACs
#   results/metrics/P.features.npz                     per-sample extractor features (the bootstrap's input)
#   results/metrics/reference.json                     real-vs-real floor and pure-noise metrics
#   results/metrics/calibration.csv                    the FID extractor's calibration (glyphs)
#   results/tables/metrics.csv                         one row per grid point
#   results/tables/verdicts.csv, comparisons.csv       the claims ledger; each point against the static envelopes
#   results/tables/cfg_selection.csv                   guidance chosen on a held-out seed (sampling.cfg_selection)
#   results/tables/finetune_noise.csv                  FID spread across fine-tune seeds (finetune.seed_noise)
#   results/tables/latency.csv                         the latency job: every point's model timed alone
#   results/figures/*.png                              figures from the notebooks (pareto, latency, claims, samples)
#   results/notebooks/*.ipynb                          the executed notebooks
#
# Run: snakemake --cores 2 (config/config.yaml); other studies: --configfile config/<name>.yaml.


from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        final_targets(),
