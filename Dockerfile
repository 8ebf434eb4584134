# The image cluster/rayjob.yaml runs: this package on Ray's own image, at the Ray version the
# manifests name (rayVersion in rayjob.yaml, the ray pin in cluster.yaml).
#
#   docker build -t sssl-dist:0.1.0-gpu .                          # CUDA torch, GPU workers
#   docker build --build-arg VARIANT=cpu -t sssl-dist:0.1.0-cpu .  # CPU torch, a smaller image
#
# VARIANT is the platform part of rayproject/ray's tag (cpu, gpu or a cuXXX tag) and also picks
# where torch comes from.
ARG RAY_VERSION=2.60.0
ARG VARIANT=gpu
FROM rayproject/ray:${RAY_VERSION}-py311-${VARIANT}
ARG RAY_VERSION
ARG VARIANT
ARG TORCH_SPEC=torch==2.13.0

# Only what `pip install .` needs (the .dockerignore keeps the build context to the same).
WORKDIR /home/ray/sssl-dist
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users .ci/install-torch .ci/install-torch
COPY --chown=ray:users sssl_dist sssl_dist
COPY --chown=ray:users shards shards
COPY --chown=ray:users tuning tuning

# torch first, as the Makefile does: left to pip, torch on Linux is the CUDA build with several
# GB of CUDA packages, which a CPU image does not need; the GPU variant wants exactly that build
# (empty TORCH_INDEX: by name from PyPI). Then the package as the cluster files install it, with
# Ray held at the image's version so pip cannot replace the Ray the image was built around.
RUN if [ "$VARIANT" = cpu ]; then export TORCH_INDEX=https://download.pytorch.org/whl/cpu; \
    else export TORCH_INDEX=; fi \
    && export PIP_NO_CACHE_DIR=1 TORCH_SPEC="$TORCH_SPEC" \
    && bash .ci/install-torch python \
    && pip install -q . "ray[train,tune,default]==${RAY_VERSION}" \
    && cd / && python -c "import ray, sssl_dist.cli; assert ray.__version__ == '${RAY_VERSION}'" \
    && sssl train --help > /dev/null

# Out of the source tree, so `python -m sssl_dist` runs the installed package.
WORKDIR /home/ray
