# Inputs every method shares: the dataset's draws, the base DiT and the FID feature extractor.


rule prepare_data:
    input:
        get_dataset_inputs,
    output:
        data="resources/data/{draw}.npz",
        record="resources/data/{draw}.npz.json",
    log:
        "logs/prepare_data/{draw}.log",
    benchmark:
        "results/benchmarks/prepare_data/{draw}.tsv"
    # first: every evaluate job waits on the metric inputs
    priority: 2
    conda:
        ENV
    threads: 2
    params:
        dataset=dataset_flags,
        code=code_of("jobs.data"),
    shell:
        "python -m ditpareto --threads {threads} prepare-data {params.dataset} --draw {wildcards.draw} "
        "--workers {threads} --out {output.data:q} > {log:q} 2>&1"


rule pretrain:
    input:
        data="resources/data/train.npz",
    output:
        weights="resources/pretrained/pretrained_here.pt",
        loss="results/training/pretrain/loss.csv",
    log:
        "logs/pretrain/pretrain.log",
    benchmark:
        "results/benchmarks/pretrain/pretrain.tsv"
    conda:
        ENV
    threads: 2
    resources:
        # GPUs (set by the profile): one torchrun process per GPU; 0 or 1 trains in one process.
        gpu=0,
    params:
        model=model_flags(),
        train=pretrain_flags(),
        state="results/training/pretrain/state.pt",
        code=code_of("jobs.training"),
    shell:
        "python -m ditpareto --threads {threads} --nproc {resources.gpu} pretrain {params.model} {params.train} "
        "--data {input.data:q} --state {params.state:q} --log-csv {output.loss:q} --out {output.weights:q} "
        "> {log:q} 2>&1"


rule import_base:
    input:
        get_base_source,
    output:
        "resources/pretrained/base.pt",
    log:
        "logs/import_base/base.log",
    conda:
        ENV
    params:
        model=model_flags(),
        sha256=sha256_flag(),
        code=code_of("jobs.checkpoints"),
    shell:
        "python -m ditpareto import-base {params.model} --checkpoint {input:q} {params.sha256} "
        "--out {output:q} > {log:q} 2>&1"


rule train_extractor:
    input:
        data="resources/data/extractor.npz",
        val="resources/data/extractor_val.npz",
    output:
        weights="resources/fid/extractor_here.pt",
        report="results/metrics/extractor.json",
    log:
        "logs/train_extractor/extractor.log",
    benchmark:
        "results/benchmarks/train_extractor/extractor.tsv"
    conda:
        ENV
    threads: 2
    params:
        extractor=config["metrics"]["feature_extractor"],
        steps=config["metrics"]["extractor"]["steps"],
        seed=config["metrics"]["extractor"]["seed"],
        code=code_of("jobs.metrics"),
    shell:
        "python -m ditpareto --threads {threads} train-extractor --extractor {params.extractor} "
        "--data {input.data:q} --val {input.val:q} --steps {params.steps} --seed {params.seed} "
        "--out {output.weights:q} --report {output.report:q} > {log:q} 2>&1"


rule import_extractor:
    input:
        get_extractor_source,
    output:
        "resources/fid/extractor.pt",
    log:
        "logs/import_extractor/extractor.log",
    # first: every evaluate job waits on the metric inputs
    priority: 2
    conda:
        ENV
    params:
        extractor=config["metrics"]["feature_extractor"],
        sha256=extractor_sha256_flag(),
        code=code_of("jobs.checkpoints"),
    shell:
        "python -m ditpareto import-extractor --extractor {params.extractor} --checkpoint {input:q} "
        "{params.sha256} --out {output:q} > {log:q} 2>&1"


rule calibrate:
    input:
        reference="resources/data/reference.npz",
        floor="resources/data/floor.npz",
        extractor=get_extractor_weights,
    output:
        table=report(
            "results/metrics/calibration.csv",
            caption="../report/calibration.rst",
            category="4. Tables",
        ),
        summary="results/metrics/calibration.json",
    log:
        "logs/calibrate/calibration.log",
    benchmark:
        "results/benchmarks/calibrate/calibration.tsv"
    # first: every evaluate job waits on the metric inputs
    priority: 2
    conda:
        ENV
    threads: 2
    params:
        metrics=metric_flags(),
        samples=config["sampling"]["num_samples"],
        replicates=config["metrics"]["calibration"]["replicates"],
        min_ratio=config["metrics"]["calibration"]["min_ratio"],
        code=code_of("jobs.metrics"),
    shell:
        "python -m ditpareto --threads {threads} calibrate --reference {input.reference:q} --floor {input.floor:q} "
        "--samples {params.samples} --replicates {params.replicates} --min-ratio {params.min_ratio} "
        "{params.metrics} --extractor-weights {input.extractor:q} --out {output.table:q} > {log:q} 2>&1"


rule reference:
    input:
        reference=get_metric_reference,
        floor=get_floor,
        extractor=get_extractor_weights,
    output:
        "results/metrics/reference.json",
    log:
        "logs/reference/reference.log",
    benchmark:
        "results/benchmarks/reference/reference.tsv"
    # first: every evaluate job waits on the metric inputs
    priority: 2
    conda:
        ENV
    threads: 2
    params:
        metrics=metric_flags(),
        reference=reference_flag(),
        floor=lambda wildcards, input: floor_flags(input),
        code=code_of("jobs.metrics"),
    shell:
        "python -m ditpareto --threads {threads} reference {params.reference} {input.reference:q} {params.floor} "
        "{params.metrics} --extractor-weights {input.extractor:q} --out {output:q} > {log:q} 2>&1"


rule reference_stats:
    input:
        reference="resources/data/reference.npz",
        extractor=get_extractor_weights,
    output:
        temp("resources/fid/reference_stats.npz"),
    log:
        "logs/reference_stats/reference_stats.log",
    benchmark:
        "results/benchmarks/reference_stats/reference_stats.tsv"
    # first: every evaluate job waits on the metric inputs
    priority: 2
    conda:
        ENV
    threads: 2
    params:
        metrics=metric_flags(),
        code=code_of("jobs.metrics"),
    shell:
        "python -m ditpareto --threads {threads} reference-stats --reference {input.reference:q} "
        "{params.metrics} --extractor-weights {input.extractor:q} --out {output:q} > {log:q} 2>&1"
