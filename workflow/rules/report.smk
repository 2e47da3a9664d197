# Tables and figures (cheap: run locally even under a cluster executor). Figures come from the notebooks in
# notebooks/, executed headless with papermill; the executed copies land in results/notebooks/.


localrules:
    aggregate,
    select_cfg,
    verdicts,
    notebook_pareto,
    notebook_latency,
    notebook_claims,
    notebook_samples,


rule aggregate:
    input:
        metrics=get_all_metrics,
        latency="results/tables/latency.csv",
        cfg_selection=get_cfg_selection_table,
    output:
        report(
            "results/tables/metrics.csv",
            caption="../report/metrics.rst",
            category="4. Tables",
        ),
    log:
        "logs/aggregate/metrics.log",
    conda:
        ENV
    params:
        selection=lambda wildcards, input: cfg_selection_flag(input),
        code=code_of("jobs.tables"),
    shell:
        "python -m ditpareto aggregate {input.metrics:q} --latency {input.latency:q} {params.selection} "
        "--out {output:q} > {log:q} 2>&1"


rule select_cfg:
    input:
        selection=get_selection_metrics,
        recorded=get_recorded_cfg,
        evaluation=get_all_metrics,
    output:
        report(
            "results/tables/cfg_selection.csv",
            caption="../report/cfg_selection.rst",
            category="4. Tables",
        ),
    log:
        "logs/select_cfg/cfg_selection.log",
    conda:
        ENV
    params:
        source=lambda wildcards, input: select_cfg_source(input),
        code=code_of("jobs.tables"),
    shell:
        "python -m ditpareto select-cfg {params.source} --evaluation {input.evaluation:q} "
        "--out {output:q} > {log:q} 2>&1"


rule verdicts:
    input:
        metrics=get_all_metrics,
        claims=repo_file("results/published/claims.csv"),
        cfg_selection=get_cfg_selection_table,
        noise_recorded=get_recorded_noise,
        plateau_recorded=get_recorded_plateau,
    output:
        verdicts=report(
            "results/tables/verdicts.csv",
            caption="../report/verdicts.rst",
            category="2. Verdicts",
        ),
        comparisons=report(
            "results/tables/comparisons.csv",
            caption="../report/comparisons.rst",
            category="2. Verdicts",
        ),
        dominance=report(
            "results/tables/dominance.csv",
            caption="../report/dominance.rst",
            category="2. Verdicts",
        ),
        noise="results/tables/finetune_noise.csv",
        plateau="results/tables/plateau_points.json",
    log:
        "logs/verdicts/verdicts.log",
    conda:
        ENV
    params:
        fixed_cfg=config["sampling"]["cfg_scale"],
        full_steps=config["sampling"]["steps"][0],
        selection=lambda wildcards, input: cfg_selection_flag(input),
        guidance=guidance_flag(),
        noise=lambda wildcards, input: recorded_noise_flags(input),
        plateau=lambda wildcards, input: recorded_plateau_flags(input),
        code=code_of("jobs.tables"),
    shell:
        "python -m ditpareto verdicts {input.metrics:q} --claims {input.claims:q} --fixed-cfg {params.fixed_cfg} "
        "--full-steps {params.full_steps} --comparisons {output.comparisons:q} {params.selection} {params.guidance} "
        "{params.noise} --finetune-noise {output.noise:q} {params.plateau} --plateau-out {output.plateau:q} "
        "--dominance {output.dominance:q} --out {output.verdicts:q} "
        "> {log:q} 2>&1"


rule summary:
    input:
        verdicts="results/tables/verdicts.csv",
        metrics="results/tables/metrics.csv",
        figures=[
            "results/figures/pareto_fid_vs_gmacs.png",
            "results/figures/claims_relative.png",
        ],
    output:
        summary=report(
            "results/summary.md",
            caption="../report/summary.rst",
            category="1. The answer",
            labels={"item": "summary"},
        ),
        ledger=report(
            "results/tables/verdicts.html",
            caption="../report/verdicts.rst",
            category="1. The answer",
            labels={"item": "verdict ledger"},
        ),
        metrics=report(
            "results/tables/metrics.html",
            caption="../report/metrics.rst",
            category="1. The answer",
            labels={"item": "grid points"},
        ),
        run_config=report(
            "results/run-config.yaml",
            caption="../report/run_config.rst",
            category="5. Configuration",
        ),
        answer="results/answer.html",
    log:
        "logs/summary/summary.log",
    conda:
        ENV
    params:
        scale=study_scale(),
        config=json.dumps(config, sort_keys=True),
        code=code_of("jobs.tables"),
    shell:
        "python -m ditpareto summary --verdicts {input.verdicts:q} --metrics {input.metrics:q} "
        "--scale {params.scale:q} --figures {input.figures:q} --ledger-html {output.ledger:q} "
        "--metrics-html {output.metrics:q} --answer-html {output.answer:q} --config-json {params.config:q} --config-out {output.run_config:q} "
        "--out {output.summary:q} > {log:q} 2>&1"


# One rule per figure notebook: (figure, report caption or None for files that are not report items), the
# notebook's extra inputs and extra papermill parameters.
NOTEBOOKS = {
    "pareto": {
        "figures": [
            ("results/figures/pareto_fid_vs_gmacs.png", "pareto.rst"),
            ("results/figures/pareto_fid_vs_gmacs.pdf", None),
        ]
        # only where the study runs the plateau check: no empty figure
        + (
            [("results/figures/plateau_fid_vs_train_gmacs.png", "plateau.rst")]
            if study.plateau_planned(config)
            else []
        ),
    },
    "latency": {
        "figures": [
            ("results/figures/fid_vs_latency.png", "latency.rst"),
            ("results/figures/measured_vs_nominal_compute.png", "compute.rst"),
        ],
    },
    "claims": {
        "figures": [("results/figures/claims_relative.png", "claims.rst")],
        "inputs": {"claims": repo_file("results/published/claims.csv")},
        "parameters": lambda input: {"claims_path": input.claims},
    },
    "samples": {
        "figures": [("results/figures/sample_grid.png", "samples.rst")],
        "inputs": {"samples": get_grid_samples},
        "parameters": lambda input: {
            "samples_root": "results/samples",
            "seed": config["sampling"]["seeds"][0],
        },
    },
}


for name, spec in NOTEBOOKS.items():

    rule:
        name:
            f"notebook_{name}"
        input:
            **spec.get("inputs", {}),
            notebook=repo_file(f"notebooks/{name}.ipynb"),
            table="results/tables/metrics.csv",
            reference="results/metrics/reference.json",
        output:
            executed=f"results/notebooks/{name}.ipynb",
            figures=[
                (
                    report(path, caption=f"../report/{caption}", category="3. Figures")
                    if caption
                    else path
                )
                for path, caption in spec["figures"]
            ],
        log:
            f"logs/notebook/{name}.log",
        conda:
            ENV
        params:
            parameters=lambda wildcards, input, extra=spec.get("parameters"): notebook_parameters(
                input, **(extra(input) if extra else {})
            ),
            # the notebooks draw with ditpareto.plotting
            code=code_of("jobs.tables", "plotting"),
        shell:
            "python -m ditpareto notebook --notebook {input.notebook:q} --out {output.executed:q} "
            "--parameters {params.parameters:q} --figures {output.figures:q} > {log:q} 2>&1"
