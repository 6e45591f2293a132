"""The AdGen diffusion service: a model registry, one GPU worker, and DiffusionService over gRPC."""
