# A video study (config `video`): the toy one (--configfile config/video.yaml; its own rules in video_toy.smk) or
# the paper setting (config/paper-video-*.yaml, a `video.dataset` section; video_paper.smk). Paths (V = results/video):
#   resources/video/{draw}.npz, .mp4            toy clip draws: labels + H.264 frames (train also: frames.npz)
#   resources/video/train.npz                   paper: training clips of the dataset as SD-VAE latents (N, F, 4, h, w)
#   resources/video/fvd_reference.npz           paper: I3D statistics of the real clips (StyleGAN-V protocol)
#   resources/video/image_base.pt               toy: the image DiT trained on the frames (spatial blocks' start)
#   resources/video/base.pt                     the validated Latte base (pretrained here, shipped or official)
#   resources/video/clip_extractor.pt           toy: the FVD-toy (2+1)D CNN; frame_extractor.pt: the image glyph-cnn
#   V/checkpoints/{method}/{run}/finetuned.pt   a method's fine-tune (run: shared, or budget~B for per-budget methods;
#                                               the shared recipe, equal compute), trained here or shipped
#   V/samples/{method}/budget~B/cfg~S/seed~N    clips (.npz) + .record.json
#   V/metrics/{method}/budget~B/cfg~S/seed~N    FVD-toy (CI) and per-frame FID, or FVD (paper); GMACs (.json)
#   V/tables/metrics.csv, clip_validation.csv   the table; the extractor's validation
#   V/figures/pareto.png, samples.png, clips.gif


rule import_video_base:
    input:
        get_video_base_source,
    output:
        "resources/video/base.pt",
    log:
        "logs/video/import_video_base.log",
    conda:
        ENV
    params:
        model=video_model_flags(),
        sha256=video_base_sha256_flag(),
        code=code_of("jobs.checkpoints"),
    shell:
        "python -m ditpareto import-base {params.model} --checkpoint {input:q} {params.sha256} "
        "--out {output:q} > {log:q} 2>&1"


rule convert_video:
    input:
        "resources/video/base.pt",
    output:
        f"{V}/checkpoints/{{method}}/converted.pt",
    log:
        "logs/video/convert/{method}.log",
    conda:
        ENV
    params:
        model=video_model_flags(),
        options=video_options,
        code=code_of("jobs.training"),
    shell:
        "python -m ditpareto convert --method {wildcards.method} {params.options} --base {input:q} {params.model} "
        "--out {output:q} > {log:q} 2>&1"


rule finetune_video:
    input:
        checkpoint=f"{V}/checkpoints/{{method}}/converted.pt",
        data="resources/video/train.npz",
    output:
        weights=f"{V}/checkpoints/{{method}}/{{run}}/trained.pt",
        record=f"{V}/checkpoints/{{method}}/{{run}}/trained.pt.json",
        loss=f"{V}/training/{{method}}/{{run}}/loss.csv",
    log:
        "logs/video/finetune/{method}/{run}.log",
    benchmark:
        "results/benchmarks/video/finetune/{method}/{run}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        # GPUs (profiles/slurm sets them for the paper setting): one torchrun process per GPU; 0 or 1: one process.
        gpu=0,
    params:
        model=video_model_flags(),
        options=video_options,
        budget=video_run_budget_flag,
        train=video_finetune_flags(),
        state=f"{V}/training/{{method}}/{{run}}/state.pt",
        code=code_of("jobs.training"),
    shell:
        "python -m ditpareto --threads {threads} --nproc {resources.gpu} finetune --method {wildcards.method} "
        "{params.options} {params.budget} "
        "--checkpoint {input.checkpoint:q} --data {input.data:q} {params.model} {params.train} "
        "--state {params.state:q} --log-csv {output.loss:q} --out {output.weights:q} > {log:q} 2>&1"


rule import_finetuned_video:
    input:
        unpack(get_video_finetuned_source),
    output:
        weights=f"{V}/checkpoints/{{method}}/{{run}}/finetuned.pt",
        record=f"{V}/checkpoints/{{method}}/{{run}}/finetuned.pt.json",
    log:
        "logs/video/import_finetuned/{method}/{run}.log",
    conda:
        ENV
    params:
        model=video_model_flags(),
        options=video_options,
        budget=video_run_budget_flag,
        sha256=video_finetuned_sha256_flags,
        train_gmacs=study.argv({"train_gmacs": VIDEO.get("finetune", {}).get("train_gmacs")}),
        code=code_of("jobs.checkpoints"),
    shell:
        "python -m ditpareto import-finetuned --method {wildcards.method} {params.options} {params.budget} "
        "{params.model} --checkpoint {input.weights:q} {params.sha256} {params.train_gmacs} "
        "--out {output.weights:q} > {log:q} 2>&1"


rule sample_video:
    input:
        get_video_checkpoint,
    output:
        samples=f"{V}/samples/{{method}}/budget~{{budget}}/cfg~{{cfg}}/seed~{{seed}}.npz",
        record=f"{V}/samples/{{method}}/budget~{{budget}}/cfg~{{cfg}}/seed~{{seed}}.record.json",
    log:
        "logs/video/sample/{method}/budget~{budget}/cfg~{cfg}/seed~{seed}.log",
    benchmark:
        "results/benchmarks/video/sample/{method}/budget~{budget}/cfg~{cfg}/seed~{seed}.tsv"
    conda:
        ENV
    threads: 1
    params:
        model=video_model_flags(),
        sampling=video_sampling_flags(),
        ft=video_ft,
        steps=video_steps,
        options=video_options,
        code=code_of("jobs.sampling"),
    shell:
        "python -m ditpareto --threads {threads} sample --method {wildcards.method} {params.options} "
        "--budget {wildcards.budget} --steps {params.steps} --ft {params.ft} --cfg-scale {wildcards.cfg} "
        "--seed {wildcards.seed} "
        "--checkpoint {input:q} {params.model} {params.sampling} "
        "--out {output.samples:q} --record {output.record:q} > {log:q} 2>&1"


rule aggregate_video:
    input:
        [point_path(f"{V}/metrics", p, ".json") for p in video_points()],
    output:
        f"{V}/tables/metrics.csv",
    log:
        "logs/video/aggregate.log",
    conda:
        ENV
    params:
        code=code_of("jobs.tables"),
    shell:
        "python -m ditpareto aggregate {input:q} --out {output:q} > {log:q} 2>&1"


rule video_figures:
    input:
        table=f"{V}/tables/metrics.csv",
        samples=[point_path(f"{V}/samples", p, ".npz") for p in video_points()],
    output:
        pareto=report(f"{V}/figures/pareto.png", category="Video"),
        strip=report(f"{V}/figures/samples.png", category="Video"),
        clips=report(f"{V}/figures/clips.gif", category="Video"),
    log:
        "logs/video/figures.log",
    conda:
        ENV
    params:
        code=code_of("jobs.video"),
    shell:
        "python -m ditpareto video-figures --table {input.table:q} --samples {input.samples:q} "
        "--pareto {output.pareto:q} --strip {output.strip:q} --clips {output.clips:q} > {log:q} 2>&1"
