# Tables and figures (cheap: run locally even under a cluster executor). Figures come from the notebooks in
# notebooks/, executed headless with papermill; the executed copies land in results/notebooks/.


localrules:
    aggregate,
    notebook_pareto,
    notebook_latency,
    notebook_claims,
    notebook_samples,


rule aggregate:
    input:
        metrics=get_all_metrics,
        latency="results/tables/latency.csv",
    output:
        report(
            "results/tables/metrics.csv",
            caption="../report/metrics.rst",
            category="Tables",
        ),
    log:
        "logs/aggregate/metrics.log",
    conda:
        ENV
    params:
        version=VERSION,
    shell:
        "python -m ditpareto aggregate {input.metrics:q} --latency {input.latency:q} --out {output:q} > {log:q} 2>&1"


rule notebook_pareto:
    input:
        notebook=repo_file("notebooks/pareto.ipynb"),
        table="results/tables/metrics.csv",
        reference="results/metrics/reference.json",
    output:
        executed="results/notebooks/pareto.ipynb",
        png=report(
            "results/figures/pareto_fid_vs_gmacs.png",
            caption="../report/pareto.rst",
            category="Figures",
        ),
        pdf="results/figures/pareto_fid_vs_gmacs.pdf",
        plateau=report(
            "results/figures/plateau_fid_vs_train_gmacs.png",
            caption="../report/plateau.rst",
            category="Figures",
        ),
    log:
        "logs/notebook/pareto.log",
    conda:
        ENV
    params:
        parameters=lambda wildcards, input: notebook_parameters(input),
        version=VERSION,
    shell:
        "python -m ditpareto notebook --notebook {input.notebook:q} --out {output.executed:q} "
        "--parameters {params.parameters:q} --figures {output.png:q} {output.pdf:q} {output.plateau:q} > {log:q} 2>&1"


rule notebook_latency:
    input:
        notebook=repo_file("notebooks/latency.ipynb"),
        table="results/tables/metrics.csv",
        reference="results/metrics/reference.json",
    output:
        executed="results/notebooks/latency.ipynb",
        latency=report(
            "results/figures/fid_vs_latency.png",
            caption="../report/latency.rst",
            category="Figures",
        ),
        compute=report(
            "results/figures/measured_vs_nominal_compute.png",
            caption="../report/compute.rst",
            category="Figures",
        ),
    log:
        "logs/notebook/latency.log",
    conda:
        ENV
    params:
        parameters=lambda wildcards, input: notebook_parameters(input),
        version=VERSION,
    shell:
        "python -m ditpareto notebook --notebook {input.notebook:q} --out {output.executed:q} "
        "--parameters {params.parameters:q} --figures {output.latency:q} {output.compute:q} > {log:q} 2>&1"


rule notebook_claims:
    input:
        notebook=repo_file("notebooks/claims.ipynb"),
        table="results/tables/metrics.csv",
        reference="results/metrics/reference.json",
        claims=repo_file("results/published/claims.csv"),
    output:
        executed="results/notebooks/claims.ipynb",
        png=report(
            "results/figures/claims_relative.png",
            caption="../report/claims.rst",
            category="Figures",
        ),
    log:
        "logs/notebook/claims.log",
    conda:
        ENV
    params:
        parameters=lambda wildcards, input: notebook_parameters(input, claims_path=input.claims),
        version=VERSION,
    shell:
        "python -m ditpareto notebook --notebook {input.notebook:q} --out {output.executed:q} "
        "--parameters {params.parameters:q} --figures {output.png:q} > {log:q} 2>&1"


rule notebook_samples:
    input:
        notebook=repo_file("notebooks/samples.ipynb"),
        table="results/tables/metrics.csv",
        reference="results/metrics/reference.json",
        samples=get_grid_samples,
    output:
        executed="results/notebooks/samples.ipynb",
        png=report(
            "results/figures/sample_grid.png",
            caption="../report/samples.rst",
            category="Figures",
        ),
    log:
        "logs/notebook/samples.log",
    conda:
        ENV
    params:
        parameters=lambda wildcards, input: notebook_parameters(
            input, samples_root="results/samples", seed=config["sampling"]["seeds"][0]
        ),
        version=VERSION,
    shell:
        "python -m ditpareto notebook --notebook {input.notebook:q} --out {output.executed:q} "
        "--parameters {params.parameters:q} --figures {output.png:q} > {log:q} 2>&1"
