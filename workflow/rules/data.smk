# Inputs every method shares: the dataset, the base DiT and the FID feature extractor.


rule prepare_data:
    input:
        get_dataset_inputs,
    output:
        "resources/data/dataset.npz",
    log:
        "logs/prepare_data/dataset.log",
    benchmark:
        "benchmarks/prepare_data/dataset.tsv"
    conda:
        ENV
    threads: 2
    params:
        dataset=dataset_flags(),
        version=VERSION,
    shell:
        "python -m ditpareto --threads {threads} prepare-data {params.dataset} --workers {threads} "
        "--out {output} > {log} 2>&1"


rule pretrain_base:
    input:
        data="resources/data/dataset.npz",
    output:
        weights="resources/pretrained/pretrained_here.pt",
        loss="results/training/pretrain_base/loss.csv",
    log:
        "logs/pretrain_base/pretrain_base.log",
    benchmark:
        "benchmarks/pretrain_base/pretrain_base.tsv"
    conda:
        ENV
    threads: 2
    resources:
        # GPUs (set by the profile): one torchrun process per GPU; 0 or 1 trains in one process.
        gpu=0,
    params:
        model=model_flags(),
        train=pretrain_flags(),
        state="results/training/pretrain_base/state.pt",
        version=VERSION,
    shell:
        "python -m ditpareto --threads {threads} --nproc {resources.gpu} pretrain {params.model} {params.train} --data {input.data} "
        "--state {params.state} --log-csv {output.loss} --out {output.weights} > {log} 2>&1"


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
        version=VERSION,
    shell:
        "python -m ditpareto import-base {params.model} --checkpoint {input} {params.sha256} "
        "--out {output} > {log} 2>&1"


rule train_fid_classifier:
    input:
        data="resources/data/dataset.npz",
    output:
        weights="resources/fid/classifier.pt",
        report="results/metrics/fid_classifier.json",
    log:
        "logs/train_fid_classifier/classifier.log",
    benchmark:
        "benchmarks/train_fid_classifier/classifier.tsv"
    conda:
        ENV
    threads: 2
    params:
        steps=config["metrics"]["classifier_steps"],
        version=VERSION,
    shell:
        "python -m ditpareto --threads {threads} train-classifier --data {input.data} --steps {params.steps} "
        "--out {output.weights} --report {output.report} > {log} 2>&1"


rule fid_reference:
    input:
        reference=get_metric_reference,
        extractor=get_extractor_weights,
    output:
        "results/metrics/reference.json",
    log:
        "logs/fid_reference/reference.log",
    benchmark:
        "benchmarks/fid_reference/reference.tsv"
    conda:
        ENV
    threads: 2
    params:
        metrics=metric_flags(),
        reference=reference_flag(),
        version=VERSION,
    shell:
        "python -m ditpareto --threads {threads} reference {params.reference} {input.reference} {params.metrics} "
        "--extractor-weights {input.extractor} --out {output} > {log} 2>&1"
