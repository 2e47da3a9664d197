# ditpareto's workflow is workflow/Snakefile (the Snakemake catalog layout); this entry only includes it, so that
# `snakemake -s Snakefile` and the profiles in profiles/ work from anywhere as before. (The `include:` keyword
# would drop the included file's default target, rule `all`; the API call keeps it.)

workflow.include("workflow/Snakefile", overwrite_default_target=True)
