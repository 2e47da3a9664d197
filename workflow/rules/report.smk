# Tables and figures (cheap: run locally even under a cluster executor).


localrules:
    aggregate,
    plot_pareto,


rule aggregate:
    input:
        get_all_metrics,
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
        "python -m ditpareto aggregate {input} --out {output} > {log} 2>&1"


rule plot_pareto:
    input:
        table="results/tables/metrics.csv",
        reference="results/metrics/reference.json",
    output:
        png=report(
            "results/figures/pareto_fid_vs_gmacs.png",
            caption="../report/pareto.rst",
            category="Figures",
        ),
        pdf="results/figures/pareto_fid_vs_gmacs.pdf",
    log:
        "logs/plot_pareto/pareto.log",
    conda:
        ENV
    params:
        fixed_cfg=config["sampling"]["cfg_scale"],
        version=VERSION,
    shell:
        "python -m ditpareto plot --table {input.table} --reference {input.reference} "
        "--fixed-cfg {params.fixed_cfg} --out {output.png} {output.pdf} > {log} 2>&1"
