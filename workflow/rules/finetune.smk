# Method models: convert the base DiT, fine-tune with the shared recipe (once per method, or once per budget, at
# a multiple of the shared training compute), and import the fine-tune a grid point samples (shipped or trained;
# source: official converts the authors' released checkpoint instead).


rule convert:
    input:
        base="resources/pretrained/base.pt",
    output:
        "results/checkpoints/{method}/converted.pt",
    log:
        "logs/convert/{method}.log",
    conda:
        ENV
    params:
        model=model_flags(),
        options=options_flag,
        code=code_of("jobs.training"),
    shell:
        "python -m ditpareto convert --method {wildcards.method} {params.options} --base {input.base:q} "
        "{params.model} --out {output:q} > {log:q} 2>&1"


rule finetune:
    input:
        checkpoint="results/checkpoints/{method}/converted.pt",
        data="resources/data/train.npz",
    output:
        weights="results/checkpoints/{method}/{run}/trained.pt",
        record="results/checkpoints/{method}/{run}/trained.pt.json",
        loss="results/training/{method}/{run}/loss.csv",
    log:
        "logs/finetune/{method}/{run}.log",
    benchmark:
        "results/benchmarks/finetune/{method}/{run}.tsv"
    conda:
        ENV
    threads: 2
    resources:
        # GPUs (profiles/slurm sets 8): one torchrun process per GPU; 0 or 1 trains in one process.
        gpu=0,
    params:
        model=model_flags(),
        options=options_flag,
        budget=budget_flag,
        train=finetune_flags,
        device=device_flag(),
        state="results/training/{method}/{run}/state.pt",
        code=code_of("jobs.training"),
    shell:
        "python -m ditpareto --threads {threads} --nproc {resources.gpu} finetune --method {wildcards.method} "
        "{params.options} {params.budget} --checkpoint {input.checkpoint:q} --data {input.data:q} {params.model} "
        "{params.train} {params.device} --state {params.state:q} --log-csv {output.loss:q} "
        "--out {output.weights:q} > {log:q} 2>&1"


rule import_finetuned:
    input:
        unpack(get_finetuned_source),
    output:
        weights="results/checkpoints/{method}/{run}/finetuned.pt",
        record="results/checkpoints/{method}/{run}/finetuned.pt.json",
    log:
        "logs/import_finetuned/{method}/{run}.log",
    conda:
        ENV
    params:
        model=model_flags(),
        options=options_flag,
        budget=budget_flag,
        sha256=finetuned_sha256_flag,
        train_gmacs=record_gmacs_flag,
        command=import_command,
        code=code_of("jobs.checkpoints"),
    shell:
        "python -m ditpareto {params.command} --method {wildcards.method} {params.options} {params.budget} "
        "{params.model} --checkpoint {input.weights:q} {params.sha256} {params.train_gmacs} "
        "--out {output.weights:q} > {log:q} 2>&1"
