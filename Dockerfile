# ad-exchange-exporter: a slim, non-root image. Build: docker build -t ad-exchange-exporter .
# tests/unit/test_dockerfile.py runs this file's install steps in a clean virtual environment.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# --- build: compilers and headers stay here --------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# gssapi (Kerberos binds and remoting) builds against MIT Kerberos.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev libkrb5-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install ".[kerberos]" \
 && /opt/venv/bin/ad-exchange-exporter --version

# --- runtime: the virtual environment and the Kerberos runtime libraries only ---------------------------------
FROM ${PYTHON_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgssapi-krb5-2 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 exporter \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin exporter \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/ad-exchange-exporter
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 9733
VOLUME ["/var/lib/ad-exchange-exporter"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-m", "exporter.healthcheck", "http://127.0.0.1:9733/-/healthy"]
ENTRYPOINT ["ad-exchange-exporter"]
CMD ["--config.file=/etc/ad-exchange-exporter/config.yml", "--web.listen-address=0.0.0.0:9733"]
