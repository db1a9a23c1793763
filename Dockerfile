# shardrec on NVIDIA GPUs: the CUDA builds of the stack the Makefile pins for CPU
# (torch 2.13.0 + fbgemm-gpu 1.8.0 + torchrec 1.8.0 + ray 2.60.0; the three torch-side versions
# must match, see docs/troubleshooting.md). tests/test_docs_and_docker.py checks the pins agree.
#
#   docker build -t shardrec:cu128 .
#   one node:  docker run --gpus all --ipc=host -v $PWD/data:/data -v $PWD/runs:/runs shardrec:cu128 \
#                torchrun --nproc_per_node=8 -m shardrec.launch.torchrun --config dlrm_criteo \
#                --dataset.path=/data/criteo --run-dir /runs/dlrm
#   Ray:       use it as the image of the head and worker nodes (KubeRay's RayCluster
#              `image:`, or `docker.image` of `ray up`); Ray starts its own `ray start` in it.
FROM nvidia/cuda:12.8.1-runtime-ubuntu24.04

# The PyTorch wheel index that matches the base image's CUDA (12.8).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Python 3.12 from Ubuntu; wget because KubeRay's health probes call it inside the image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates wget \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

# The GPU stack first, as its own layer: torch and fbgemm-gpu from the same CUDA index, never
# fbgemm-gpu-cpu (both ship the same files). torchrec then finds its fbgemm-gpu installed.
RUN pip install torch==2.13.0 fbgemm-gpu==1.8.0 --index-url "${TORCH_INDEX}"
RUN pip install torchrec==1.8.0 torchmetrics==1.0.3 tensordict==0.15.3 pyre-extensions==0.0.32 \
        "ray[train,default]==2.60.0" \
    && python -c "import torch, fbgemm_gpu, torchrec, ray; print('stack ok: torch', torch.__version__)"

# shardrec itself (its own light dependencies come from pyproject.toml).
COPY . /opt/shardrec
RUN pip install /opt/shardrec && rm -rf /opt/shardrec/build

# A non-root user; uid 1000 like Ray's own images (Ubuntu's default `ubuntu` user had it).
RUN userdel --remove ubuntu 2>/dev/null; useradd --create-home --uid 1000 --shell /bin/bash ray
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 1000
WORKDIR /home/ray

CMD ["shardrec", "--help"]
