"""Dataset draws: one independent draw per file (glyphs), a digits split, or an ImageFolder's SD-VAE latents.

One pure function per job: typed inputs, files in, files out, a small summary dict back; the CLI
(``ditpareto.commands``) only parses flags into these arguments."""

from __future__ import annotations

import numpy as np

from ditpareto.data import ImageSet, LatentSet, digits_draw, image_folder, save_draw
from ditpareto.errors import InputError
from ditpareto.results import provenance, sha256_of, write_json
from ditpareto.study import SD_VAE_SCALE


def prepare_data(*, dataset: str, draw: str, image_size: int, out: str, num: int | None = None, seed: int = 0,
                 heldout_fraction: float = 0.3, split_seed: int = 0, path: str | None = None, vae: str | None = None,
                 max_per_class: int | None = None, device: str = "auto", latent_scale: float = SD_VAE_SCALE,
                 encode_batch_size: int = 64, encode_seed: int = 0, workers: int = 0) -> dict:
    """One draw of a dataset as an .npz, with a record <out>.json (fonts, renderer versions, flat-token share...).

    Example: python -m ditpareto prepare-data --dataset glyphs --draw reference --num 10000 --out reference.npz
    """
    record = {"dataset": dataset, "draw": draw, "image_size": image_size, **provenance()}
    if dataset == "glyphs":
        from ditpareto import glyphs

        if not num or num < 1:
            raise InputError("--dataset glyphs needs --num N >= 1 (the draw's size)")
        drawn = glyphs.draw_glyphs(draw, num, image_size, seed, progress=True)
        save_draw(ImageSet(drawn.images, drawn.labels), out, attributes=drawn.attributes)
        record.update({"num": num, "seed": seed, "settings": glyphs.GlyphSettings().__dict__,
                       "fonts": glyphs.font_record(), "renderer": glyphs.renderer_versions(),
                       "flat_token_fraction": glyphs.flat_token_fraction(drawn.images),
                       "label_counts": np.bincount(drawn.labels, minlength=10).tolist()})
    elif dataset == "digits":
        data = digits_draw(draw, image_size, heldout_fraction, split_seed)
        save_draw(data, out)
        record.update({"num": len(data.labels), "heldout_fraction": heldout_fraction, "split_seed": split_seed})
    else:
        from ditpareto.latents import encode_image_folder, load_vae, vae_factor
        from ditpareto.runtime import resolve_device

        if draw != "train":
            raise InputError("--dataset imagefolder has only the train draw (FID uses the ADM reference batch)")
        if not path or not vae:
            raise InputError("--dataset imagefolder needs --path (the train folder) and --vae (the SD-VAE folder)")
        folder = image_folder(path, image_size, max_per_class)
        autoencoder = load_vae(vae, resolve_device(device))
        if image_size % vae_factor(autoencoder):
            raise InputError(f"image size {image_size} is not divisible by the VAE's factor {vae_factor(autoencoder)}")
        latents, labels = encode_image_folder(folder, autoencoder, latent_scale, encode_batch_size, encode_seed,
                                              workers if workers > 1 else 0)
        save_draw(LatentSet(latents, labels), out, classes=np.array(folder.classes),
                  image_size=np.array(image_size), latent_scale=np.array(latent_scale))
        record.update({"num": len(labels), "classes": len(folder.classes), "latent_shape": list(latents.shape[1:])})
    record["sha256"] = sha256_of(out)
    write_json(record, str(out) + ".json")
    return {k: record[k] for k in ("dataset", "draw", "num", "sha256")}
