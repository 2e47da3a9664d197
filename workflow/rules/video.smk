# The toy video study (config `video`: --configfile config/video.yaml). Paths (V = results/video):
#   resources/video/{draw}.npz, .mp4            clip draws: labels + H.264 frames (train also: frames.npz, every frame)
#   resources/video/image_base.pt               the image DiT trained on the frames (spatial blocks' start)
#   resources/video/base.pt                     the validated Latte base (pretrained here or shipped)
#   resources/video/clip_extractor.pt           the FVD-toy (2+1)D CNN; frame_extractor.pt: the image glyph-cnn
#   V/checkpoints/{method}/finetuned.pt         a method's fine-tune (dit-ft: the shared recipe, equal compute)
#   V/samples/{method}/budget~B/cfg~S/seed~N    clips (.npz) + .record.json
#   V/metrics/{method}/budget~B/cfg~S/seed~N    FVD-toy (CI), per-frame FID, GMACs (.json)
#   V/tables/metrics.csv, clip_validation.csv   the table; the extractor's validation
#   V/figures/pareto.png, samples.png, clips.gif


rule prepare_clips:
    output:
        data="resources/video/{draw}.npz",
        video="resources/video/{draw}.mp4",
        record="resources/video/{draw}.npz.json",
    log:
        "logs/video/prepare_clips/{draw}.log",
    benchmark:
        "results/benchmarks/video/prepare_clips/{draw}.tsv"
    conda:
        ENV
    threads: 1
    params:
        num=lambda wildcards: VIDEO["draws"][wildcards.draw],
        seed=VIDEO.get("seed", 0),
        frames=lambda wildcards: (
            "--frames-out resources/video/frames.npz" if wildcards.draw == "train" else ""
        ),
        code=code_of("jobs.video"),
    shell:
        "python -m ditpareto --threads {threads} prepare-clips --draw {wildcards.draw} --num {params.num} "
        "--seed {params.seed} --out {output.data:q} --video {output.video:q} {params.frames} > {log:q} 2>&1"


rule pretrain_image_base:
    input:
        "resources/video/train.npz",
    output:
        weights="resources/video/image_base.pt",
        loss=f"{V}/training/image_base/loss.csv",
    log:
        "logs/video/pretrain_image_base.log",
    benchmark:
        "results/benchmarks/video/pretrain_image_base.tsv"
    conda:
        ENV
    threads: 1
    params:
        model=image_model_flags(),
        train=train_flags("image_base"),
        state=f"{V}/training/image_base/state.pt",
        code=code_of("jobs.training"),
    shell:
        "python -m ditpareto --threads {threads} pretrain {params.model} {params.train} "
        "--data resources/video/frames.npz --state {params.state:q} --log-csv {output.loss:q} "
        "--out {output.weights:q} > {log:q} 2>&1"


rule pretrain_video:
    input:
        data="resources/video/train.npz",
        start=get_video_pretrain_start,
    output:
        weights="resources/video/base_here.pt",
        loss=f"{V}/training/base/loss.csv",
    log:
        "logs/video/pretrain_video.log",
    benchmark:
        "results/benchmarks/video/pretrain_video.tsv"
    conda:
        ENV
    threads: 1
    params:
        model=video_model_flags(),
        train=train_flags("base"),
        start=video_pretrain_start_flags,
        state=f"{V}/training/base/state.pt",
        code=code_of("jobs.video"),
    shell:
        "python -m ditpareto --threads {threads} pretrain-video {params.model} {params.train} "
        "--data {input.data:q} {params.start} --state {params.state:q} "
        "--log-csv {output.loss:q} --out {output.weights:q} > {log:q} 2>&1"


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


rule train_clip_extractor:
    input:
        data="resources/video/extractor.npz",
        val="resources/video/extractor_val.npz",
    output:
        weights="resources/video/clip_extractor.pt",
        report=f"{V}/metrics/clip_extractor.json",
    log:
        "logs/video/train_clip_extractor.log",
    benchmark:
        "results/benchmarks/video/train_clip_extractor.tsv"
    conda:
        ENV
    threads: 1
    params:
        train=study.argv(VIDEO.get("clip_extractor", {})),
        code=code_of("jobs.video"),
    shell:
        "python -m ditpareto --threads {threads} train-clip-extractor --data {input.data:q} --val {input.val:q} "
        "{params.train} --out {output.weights:q} --report {output.report:q} > {log:q} 2>&1"


rule validate_clip_extractor:
    input:
        extractor="resources/video/clip_extractor.pt",
        reference="resources/video/reference.npz",
        floor="resources/video/floor.npz",
    output:
        f"{V}/tables/clip_validation.csv",
    log:
        "logs/video/validate_clip_extractor.log",
    conda:
        ENV
    threads: 1
    params:
        code=code_of("jobs.video"),
    shell:
        "python -m ditpareto --threads {threads} validate-clip-extractor --extractor {input.extractor:q} "
        "--reference {input.reference:q} --floor {input.floor:q} --out {output:q} > {log:q} 2>&1"


rule import_frame_extractor:
    input:
        repo_file(VIDEO["frame_extractor"]["checkpoint"]),
    output:
        "resources/video/frame_extractor.pt",
    log:
        "logs/video/import_frame_extractor.log",
    conda:
        ENV
    params:
        sha256=study.argv({"sha256": VIDEO["frame_extractor"].get("sha256")}),
        code=code_of("jobs.checkpoints"),
    shell:
        "python -m ditpareto import-extractor --extractor glyph-cnn --checkpoint {input:q} {params.sha256} "
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
        weights=f"{V}/checkpoints/{{method}}/finetuned.pt",
        record=f"{V}/checkpoints/{{method}}/finetuned.pt.json",
        loss=f"{V}/training/{{method}}/loss.csv",
    log:
        "logs/video/finetune/{method}.log",
    benchmark:
        "results/benchmarks/video/finetune/{method}.tsv"
    conda:
        ENV
    threads: 1
    params:
        model=video_model_flags(),
        options=video_options,
        train=video_finetune_flags(),
        state=f"{V}/training/{{method}}/state.pt",
        code=code_of("jobs.training"),
    shell:
        "python -m ditpareto --threads {threads} finetune --method {wildcards.method} {params.options} "
        "--checkpoint {input.checkpoint:q} --data {input.data:q} {params.model} {params.train} "
        "--state {params.state:q} --log-csv {output.loss:q} --out {output.weights:q} > {log:q} 2>&1"


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
        sampling=study.argv(
            {**VIDEO["sampling"], "reference_steps": full_steps()},
            ["sampler", "guidance_channels", "num_samples", "batch_size", "reference_steps"],
        ),
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


rule evaluate_video:
    input:
        samples=f"{V}/samples/{{method}}/budget~{{budget}}/cfg~{{cfg}}/seed~{{seed}}.npz",
        record=f"{V}/samples/{{method}}/budget~{{budget}}/cfg~{{cfg}}/seed~{{seed}}.record.json",
        reference="resources/video/reference.npz",
        clip_extractor="resources/video/clip_extractor.pt",
        frame_extractor="resources/video/frame_extractor.pt",
    output:
        f"{V}/metrics/{{method}}/budget~{{budget}}/cfg~{{cfg}}/seed~{{seed}}.json",
    log:
        "logs/video/evaluate/{method}/budget~{budget}/cfg~{cfg}/seed~{seed}.log",
    conda:
        ENV
    threads: 1
    params:
        bootstrap=study.argv(
            {
                "bootstrap_replicates": VIDEO.get("bootstrap", {}).get("replicates", 2000),
                "bootstrap_seed": VIDEO.get("bootstrap", {}).get("seed", 0),
            }
        ),
        workdir=f"{V}/tmp",
        code=code_of("jobs.video"),
    shell:
        "mkdir -p {params.workdir:q}; python -m ditpareto --threads {threads} evaluate-video "
        "--samples {input.samples:q} --record {input.record:q} --reference {input.reference:q} "
        "--clip-extractor {input.clip_extractor:q} --extractor-weights {input.frame_extractor:q} "
        "{params.bootstrap} --workdir {params.workdir:q} --out {output:q} > {log:q} 2>&1"


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
