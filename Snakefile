# ditpareto: FlexDiT, DyDiT, FlexiDiT and the fewer-steps DiT baseline on one measured FID-vs-compute pareto.
#
# Path scheme (one scheme; logs/ and benchmarks/ mirror it under <rule>/):
#   resources/data/dataset.npz                         prepared dataset (train / held-out splits)
#   resources/pretrained/base.pt                       the validated pretrained DiT every method starts from
#   resources/fid/classifier.pt                        FID feature extractor trained by the pipeline (digits)
#   results/checkpoints/{method}/converted.pt          base DiT converted to the method (its initialisation)
#   results/checkpoints/{method}/finetuned.pt          shared fine-tune (or .../budget~{budget}/finetuned.pt)
#   results/training/{method}/[budget~{budget}/]loss.csv            fine-tuning loss curves
#   results/samples/{method}/budget~{budget}/cfg~{cfg}/seed~{seed}.npz   samples (uint8) + .record.json
#   results/metrics/{method}/budget~{budget}/cfg~{cfg}/seed~{seed}.json  FID/KID/IS/P/R, GMACs, latency, params
#   results/metrics/reference.json                     real-vs-real floor and pure-noise metrics
#   results/tables/metrics.csv                         one row per grid point
#   results/figures/*.png                              figures from the notebooks (pareto, latency, claims, samples)
#   results/notebooks/*.ipynb                          the executed notebooks
#
# Run: snakemake --cores 2 (config/config.yaml); other studies: --configfile config/<name>.yaml.


from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        "results/tables/metrics.csv",
        "results/notebooks/pareto.ipynb",
        "results/notebooks/latency.ipynb",
        "results/notebooks/claims.ipynb",
        "results/notebooks/samples.ipynb",
