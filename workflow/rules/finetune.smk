# Method models: convert the base DiT, then fine-tune (once per method, or once per budget).


rule convert_checkpoint:
    input:
        base="resources/pretrained/base.pt",
    output:
        "results/checkpoints/{method}/converted.pt",
    log:
        "logs/convert_checkpoint/{method}.log",
    conda:
        ENV
    params:
        model=model_flags(),
        options=options_flag,
        version=VERSION,
    shell:
        "python -m ditpareto convert --method {wildcards.method} {params.options} --base {input.base} "
        "{params.model} --out {output} > {log} 2>&1"


rule finetune:
    input:
        checkpoint="results/checkpoints/{method}/converted.pt",
        data="resources/data/dataset.npz",
    output:
        weights="results/checkpoints/{method}/finetuned.pt",
        loss="results/training/{method}/loss.csv",
    log:
        "logs/finetune/{method}.log",
    benchmark:
        "benchmarks/finetune/{method}.tsv"
    conda:
        ENV
    threads: 2
    resources:
        # GPUs (profiles/slurm sets 8): one torchrun process per GPU; 0 or 1 trains in one process.
        gpu=0,
    params:
        model=model_flags(),
        options=options_flag,
        train=finetune_flags,
        state="results/training/{method}/state.pt",
        version=VERSION,
    shell:
        "python -m ditpareto --threads {threads} --nproc {resources.gpu} finetune --method {wildcards.method} {params.options} "
        "--checkpoint {input.checkpoint} --data {input.data} {params.model} {params.train} "
        "--state {params.state} --log-csv {output.loss} --out {output.weights} > {log} 2>&1"


rule finetune_budget:
    input:
        checkpoint="results/checkpoints/{method}/converted.pt",
        data="resources/data/dataset.npz",
    output:
        weights="results/checkpoints/{method}/budget~{budget}/finetuned.pt",
        loss="results/training/{method}/budget~{budget}/loss.csv",
    log:
        "logs/finetune_budget/{method}/budget~{budget}.log",
    benchmark:
        "benchmarks/finetune_budget/{method}/budget~{budget}.tsv"
    conda:
        ENV
    threads: 2
    resources:
        # GPUs (profiles/slurm sets 8): one torchrun process per GPU; 0 or 1 trains in one process.
        gpu=0,
    params:
        model=model_flags(),
        options=options_flag,
        train=finetune_flags,
        state="results/training/{method}/budget~{budget}/state.pt",
        version=VERSION,
    shell:
        "python -m ditpareto --threads {threads} --nproc {resources.gpu} finetune --method {wildcards.method} {params.options} "
        "--budget {wildcards.budget} --checkpoint {input.checkpoint} --data {input.data} {params.model} "
        "{params.train} --state {params.state} --log-csv {output.loss} --out {output.weights} > {log} 2>&1"
