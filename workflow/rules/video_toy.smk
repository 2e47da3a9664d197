# The toy video study's own rules (bouncing-glyph clips, the pipeline's Latte base, FVD-toy); the shared video
# rules are in video.smk.


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


rule video_verdicts:
    input:
        metrics=[point_path(f"{V}/metrics", p, ".json") for p in video_points()],
        claims=repo_file("results/published/video-claims.csv"),
        validation=f"{V}/tables/clip_validation.csv",
    output:
        verdicts=f"{V}/tables/verdicts.csv",
        comparisons=f"{V}/tables/comparisons.csv",
    log:
        "logs/video/verdicts.log",
    conda:
        ENV
    params:
        cfg=VIDEO["sampling"].get("cfg_scale", 1.5),
        full_steps=full_steps(),
        code=code_of("jobs.video"),
    shell:
        "python -m ditpareto video-verdicts {input.metrics:q} --claims {input.claims:q} "
        "--validation {input.validation:q} --fixed-cfg {params.cfg} --full-steps {params.full_steps} "
        "--comparisons {output.comparisons:q} --out {output.verdicts:q} > {log:q} 2>&1"
