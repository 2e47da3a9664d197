# The paper video setting's own rules (config video.dataset: Latte's datasets, SD-VAE latents, FVD with I3D); the
# shared video rules are in video.smk. Every input is a local path named by config (checked at start).


rule encode_video_dataset:
    input:
        vae=repo_file(f"{VIDEO['latents']['vae']}/config.json"),
    output:
        data="resources/video/train.npz",
        record="resources/video/train.npz.json",
    log:
        "logs/video/encode_video_dataset.log",
    benchmark:
        "results/benchmarks/video/encode_video_dataset.tsv"
    conda:
        ENV
    threads: 4
    params:
        dataset=paper_dataset_flags(),
        clips=VIDEO["dataset"]["train_clips"],
        vae=lambda wildcards, input: os.path.dirname(input.vae),
        scale=VIDEO["latents"].get("scale_factor", 0.18215),
        batch=VIDEO["dataset"].get("encode_batch_size", 4),
        device=VIDEO.get("device", "auto"),
        seed=VIDEO.get("seed", 0),
        code=code_of("jobs.video_paper"),
    shell:
        "python -m ditpareto --threads {threads} encode-video-dataset {params.dataset} --clips {params.clips} "
        "--vae {params.vae:q} --latent-scale {params.scale} --batch-size {params.batch} --seed {params.seed} "
        "--device {params.device:q} --out {output.data:q} > {log:q} 2>&1"


rule fvd_reference:
    input:
        i3d=repo_file(VIDEO["fvd"]["i3d"]),
    output:
        "resources/video/fvd_reference.npz",
    log:
        "logs/video/fvd_reference.log",
    benchmark:
        "results/benchmarks/video/fvd_reference.tsv"
    conda:
        ENV
    threads: 4
    params:
        dataset=study.argv(
            {"layout": VIDEO["dataset"]["layout"], "root": repo_file(VIDEO["dataset"]["path"])}
        ),
        size=VIDEO["dataset"].get("size", 256),
        fvd=paper_fvd_flags(),
        code=code_of("jobs.video_paper"),
    shell:
        "python -m ditpareto --threads {threads} fvd-reference {params.dataset} --size {params.size} "
        "{params.fvd} --i3d {input.i3d:q} --out {output:q} > {log:q} 2>&1"


rule evaluate_fvd:
    input:
        samples=f"{V}/samples/{{method}}/budget~{{budget}}/cfg~{{cfg}}/seed~{{seed}}.npz",
        record=f"{V}/samples/{{method}}/budget~{{budget}}/cfg~{{cfg}}/seed~{{seed}}.record.json",
        reference="resources/video/fvd_reference.npz",
        i3d=repo_file(VIDEO["fvd"]["i3d"]),
    output:
        f"{V}/metrics/{{method}}/budget~{{budget}}/cfg~{{cfg}}/seed~{{seed}}.json",
    log:
        "logs/video/evaluate/{method}/budget~{budget}/cfg~{cfg}/seed~{seed}.log",
    conda:
        ENV
    threads: 4
    params:
        device=VIDEO.get("device", "auto"),
        batch=VIDEO["fvd"].get("batch_size", 8),
        code=code_of("jobs.video_paper"),
    shell:
        "python -m ditpareto --threads {threads} evaluate-fvd --samples {input.samples:q} "
        "--record {input.record:q} --reference {input.reference:q} --i3d {input.i3d:q} "
        "--batch-size {params.batch} --device {params.device:q} --out {output:q} > {log:q} 2>&1"
