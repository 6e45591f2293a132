#!/usr/bin/env bash
# Wheels the device machine's image lacks (or has too old) for bench.diffusion_gpu, into out/whl (git-ignored).
# The image has torch 2.11, accelerate, safetensors, huggingface_hub 1.33, numpy, pillow, psutil, typer, rich.
# Run here (where PyPI is reachable); then carry out/whl in the device call (see bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p out/whl
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d out/whl \
  diffusers==0.42.1 transformers==5.23.0 tokenizers==0.23.3 \
  grpcio==1.85.1 grpcio-status==1.85.1 grpcio-health-checking==1.85.1 grpcio-reflection==1.85.1 \
  grpc-interceptor==0.15.4 protobuf==7.36.2 googleapis-common-protos==1.76.0 \
  pydantic==2.14.4 pydantic_core==2.50.5 pydantic-settings==2.16.3 python-dotenv==1.2.4 \
  typing-inspection==0.4.5 annotated-types==0.8.0
du -sh out/whl
