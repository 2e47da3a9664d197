# The grid: method x budget x guidance scale x seed -> samples -> metrics.


rule sample:
    input:
        checkpoint=get_method_checkpoint,
    output:
        samples="results/samples/{method}/budget~{budget}/cfg~{cfg}/seed~{seed}.npz",
        record="results/samples/{method}/budget~{budget}/cfg~{cfg}/seed~{seed}.record.json",
    log:
        "logs/sample/{method}/budget~{budget}/cfg~{cfg}/seed~{seed}.log",
    benchmark:
        "benchmarks/sample/{method}/budget~{budget}/cfg~{cfg}/seed~{seed}.tsv"
    conda:
        ENV
    threads: 2
    params:
        model=model_flags(),
        sampling=sampling_flags(),
        options=options_flag,
        version=VERSION,
    shell:
        "python -m ditpareto --threads {threads} sample --method {wildcards.method} {params.options} "
        "--budget {wildcards.budget} --cfg-scale {wildcards.cfg} --seed {wildcards.seed} "
        "--checkpoint {input.checkpoint} "
        "{params.model} {params.sampling} --out {output.samples} --record {output.record} > {log} 2>&1"


rule evaluate:
    input:
        samples="results/samples/{method}/budget~{budget}/cfg~{cfg}/seed~{seed}.npz",
        record="results/samples/{method}/budget~{budget}/cfg~{cfg}/seed~{seed}.record.json",
        data="resources/data/dataset.npz",
        extractor=get_extractor_weights,
    output:
        "results/metrics/{method}/budget~{budget}/cfg~{cfg}/seed~{seed}.json",
    log:
        "logs/evaluate/{method}/budget~{budget}/cfg~{cfg}/seed~{seed}.log",
    benchmark:
        "benchmarks/evaluate/{method}/budget~{budget}/cfg~{cfg}/seed~{seed}.tsv"
    conda:
        ENV
    threads: 2
    params:
        metrics=metric_flags(),
        version=VERSION,
    shell:
        "python -m ditpareto --threads {threads} evaluate --samples {input.samples} "
        "--record {input.record} --data {input.data} {params.metrics} "
        "--extractor-weights {input.extractor} --out {output} > {log} 2>&1"
