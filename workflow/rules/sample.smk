# The grid: method x budget x steps x fine-tune compute x guidance scale x seed -> sample shards -> merged
# samples -> metrics.


rule sample:
    input:
        checkpoint=get_method_checkpoint,
    output:
        # intermediates: deleted once merged (a paper-scale shard set is as large as the merged file)
        samples=temp(
            "results/samples/{method}/budget~{budget}/steps~{steps}/ft~{ft}/cfg~{cfg}/seed~{seed}/shard~{shard}-of-{shards}.npz"
        ),
        record=temp(
            "results/samples/{method}/budget~{budget}/steps~{steps}/ft~{ft}/cfg~{cfg}/seed~{seed}/shard~{shard}-of-{shards}.record.json"
        ),
    log:
        "logs/sample/{method}/budget~{budget}/steps~{steps}/ft~{ft}/cfg~{cfg}/seed~{seed}/shard~{shard}-of-{shards}.log",
    benchmark:
        "results/benchmarks/sample/{method}/budget~{budget}/steps~{steps}/ft~{ft}/cfg~{cfg}/seed~{seed}/shard~{shard}-of-{shards}.tsv"
    conda:
        ENV
    threads: 2
    params:
        model=model_flags(),
        sampling=sampling_flags,
        latents=latent_flags(),
        options=options_flag,
        device=device_flag(),
        code=code_of("jobs.sampling"),
    shell:
        "python -m ditpareto --threads {threads} sample --method {wildcards.method} {params.options} "
        "--budget {wildcards.budget:q} --steps {wildcards.steps} --ft {wildcards.ft} --cfg-scale {wildcards.cfg} "
        "--seed {wildcards.seed} "
        "--shard {wildcards.shard} --shards {wildcards.shards} --checkpoint {input.checkpoint:q} "
        "{params.model} {params.sampling} {params.latents} {params.device} "
        "--out {output.samples:q} --record {output.record:q} > {log:q} 2>&1"


rule merge_samples:
    input:
        unpack(get_shards),
    output:
        samples="results/samples/{method}/budget~{budget}/steps~{steps}/ft~{ft}/cfg~{cfg}/seed~{seed}.npz",
        record="results/samples/{method}/budget~{budget}/steps~{steps}/ft~{ft}/cfg~{cfg}/seed~{seed}.record.json",
    log:
        "logs/merge_samples/{method}/budget~{budget}/steps~{steps}/ft~{ft}/cfg~{cfg}/seed~{seed}.log",
    # a point's samples are scored as soon as they exist: no backlog of evaluate jobs at the end
    priority: 1
    conda:
        ENV
    params:
        code=code_of("jobs.shards"),
    shell:
        "python -m ditpareto merge-samples --shards {input.shards:q} --records {input.records:q} "
        "--out {output.samples:q} --record {output.record:q} > {log:q} 2>&1"


rule evaluate:
    input:
        samples="results/samples/{method}/budget~{budget}/steps~{steps}/ft~{ft}/cfg~{cfg}/seed~{seed}.npz",
        record="results/samples/{method}/budget~{budget}/steps~{steps}/ft~{ft}/cfg~{cfg}/seed~{seed}.record.json",
        reference=get_metric_reference,
        extractor=get_extractor_weights,
        reference_stats=get_reference_stats,
    output:
        metrics="results/metrics/{method}/budget~{budget}/steps~{steps}/ft~{ft}/cfg~{cfg}/seed~{seed}.json",
        features="results/metrics/{method}/budget~{budget}/steps~{steps}/ft~{ft}/cfg~{cfg}/seed~{seed}.features.npz",
    log:
        "logs/evaluate/{method}/budget~{budget}/steps~{steps}/ft~{ft}/cfg~{cfg}/seed~{seed}.log",
    benchmark:
        "results/benchmarks/evaluate/{method}/budget~{budget}/steps~{steps}/ft~{ft}/cfg~{cfg}/seed~{seed}.tsv"
    # as soon as its samples exist (see merge_samples)
    priority: 1
    conda:
        ENV
    threads: 2
    params:
        metrics=metric_flags(),
        reference=reference_flag(),
        stats=lambda wildcards, input: flag_of("--reference-stats", input.reference_stats),
        code=code_of("jobs.metrics"),
    shell:
        "python -m ditpareto --threads {threads} evaluate --samples {input.samples:q} "
        "--record {input.record:q} {params.reference} {input.reference:q} {params.metrics} "
        "{params.stats} --extractor-weights {input.extractor:q} --features {output.features:q} --out {output.metrics:q} "
        "> {log:q} 2>&1"


rule latency:
    input:
        get_latency_checkpoints,
    output:
        table="results/tables/latency.csv",
        machine="results/tables/latency.csv.json",
    log:
        "logs/latency/latency.log",
    benchmark:
        "results/benchmarks/latency/latency.tsv"
    conda:
        ENV
    # the whole machine: nothing else runs while the models are timed
    threads: config["sampling"]["latency_threads"]
    params:
        model=model_flags(),
        points=lambda wildcards: json.dumps(latency_points(), sort_keys=True),
        batches=f"1 {config['sampling']['batch_size']}",
        rounds=config["sampling"]["latency_rounds"],
        sampler=config["sampling"]["sampler"],
        guidance=config["sampling"]["guidance_channels"],
        precision=config["sampling"]["precision"],
        device=device_flag(),
        code=code_of("jobs.sampling"),
    shell:
        "python -m ditpareto --threads {threads} latency --points {params.points:q} {params.model} "
        "--batch-sizes {params.batches} --rounds {params.rounds} --sampler {params.sampler} "
        "--guidance-channels {params.guidance} --precision {params.precision} {params.device} "
        "--out {output.table:q} > {log:q} 2>&1"
