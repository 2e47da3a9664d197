"""ditpareto: FID-vs-compute pareto study of dynamic-compute Diffusion Transformers."""

__version__ = "0.1.0"
