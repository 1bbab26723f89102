# syntax=docker/dockerfile:1
# local-code-interpreter: the Agent Framework DevUI serving the code-interpreter agent on port 8090.
#
#   podman build -t local-code-interpreter .                    # or: docker build -t local-code-interpreter .
#   podman run --rm -p 8090:8090 -e DEVUI_AUTH_TOKEN=... local-code-interpreter
#
# Build arguments:
#   PYTHON_IMAGE     the Python base (default python:3.12-slim). Any Debian-family image whose `python3` has the
#                    venv module works: the application lives in a virtual environment under /opt/venv, invoked by
#                    absolute path, so python in /usr/local/bin (official image) or /usr/bin (Debian) both do.
#   WITH_HYPERLIGHT  true adds a stage that builds hyperlight-nanvix from source (Rust + maturin) into a wheel and
#                    installs it. The default (false) needs neither Rust nor git. With podman/buildah 4.3 pass it
#                    explicitly (--build-arg WITH_HYPERLIGHT=false): that buildah resolves the stage name in
#                    `FROM hyperlight-${WITH_HYPERLIGHT}` only for a command-line value (scripts/image-build does).
#   RUST_IMAGE       where that stage takes its Rust toolchain from (default rust:1-slim).
#   HYPERLIGHT_NANVIX_GIT / HYPERLIGHT_NANVIX_REF   source of hyperlight-nanvix when vendor/hyperlight-nanvix is
#                    not in the build context.
#   VERSION, REVISION, SOURCE   OCI labels.
#   PIP_CERT         optional CA bundle path for pip inside the build (behind a TLS-intercepting proxy).
#
# Runtime: UID/GID 65534, read-only root file system friendly (everything written goes to /tmp), PID 1 is tini
# (forwards SIGTERM to python and reaps orphans), python handles SIGTERM and exits well within 2 s.
# LCI_HYPERLIGHT=python|javascript selects the Hyperlight sandbox without changing the entry point.

ARG PYTHON_IMAGE=python:3.12-slim
ARG RUST_IMAGE=rust:1-slim
ARG WITH_HYPERLIGHT=false

# ---------------------------------------------------------------------------------------------------------------
# build: a virtual environment with the pinned runtime dependencies (cached until requirements.txt changes).
FROM ${PYTHON_IMAGE} AS build
ARG PIP_CERT
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_DEFAULT_TIMEOUT=120
RUN python3 -m venv /opt/venv
COPY requirements.txt /build/requirements.txt
RUN /opt/venv/bin/python -m pip install --no-cache-dir -r /build/requirements.txt

# app: the package itself, without dependencies, into /opt/app: its own small layer in the runtime image, so a
# code change neither rebuilds nor re-pushes the dependency layer. A .pth file in the venv puts it on sys.path.
FROM build AS app
COPY pyproject.toml README.md /build/
COPY src/ /build/src/
RUN /opt/venv/bin/python -m pip install --no-cache-dir --no-deps --target /opt/app /build \
 && rm -rf /build \
 && PYTHONPATH=/opt/app /opt/venv/bin/python -c "import local_code_interpreter.__main__"

# ---------------------------------------------------------------------------------------------------------------
# init: tini, a tiny init for PID 1 (signal forwarding, zombie reaping); only its static binary is kept.
FROM ${PYTHON_IMAGE} AS init
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends tini >/dev/null \
 && { cp /usr/bin/tini-static /tini || cp /usr/bin/tini /tini; } \
 && rm -rf /var/lib/apt/lists/*

# ---------------------------------------------------------------------------------------------------------------
# Optional Hyperlight stage (WITH_HYPERLIGHT=true): hyperlight-nanvix built from source with maturin, against the
# same Python as the runtime, and installed into the virtual environment.
FROM ${RUST_IMAGE} AS rust

FROM build AS hyperlight-true
ARG PIP_CERT
ARG HYPERLIGHT_NANVIX_GIT=https://github.com/hyperlight-dev/hyperlight-nanvix.git
ARG HYPERLIGHT_NANVIX_REF=main
ARG HYPERLIGHT_NANVIX_FEATURES=python
COPY --from=rust /usr/local/cargo /usr/local/cargo
COPY --from=rust /usr/local/rustup /usr/local/rustup
ENV CARGO_HOME=/usr/local/cargo RUSTUP_HOME=/usr/local/rustup PATH=/usr/local/cargo/bin:$PATH
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      build-essential pkg-config git ca-certificates >/dev/null \
 && rm -rf /var/lib/apt/lists/*
# vendor/hyperlight-nanvix from the build context when present (target/ is in .dockerignore), else a git clone.
RUN --mount=type=bind,source=.,target=/context \
    if [ -f /context/vendor/hyperlight-nanvix/Cargo.toml ]; then \
      cp -a /context/vendor/hyperlight-nanvix /hyperlight-nanvix; \
    else \
      git clone --depth 1 --branch "$HYPERLIGHT_NANVIX_REF" "$HYPERLIGHT_NANVIX_GIT" /hyperlight-nanvix \
      || { git clone "$HYPERLIGHT_NANVIX_GIT" /hyperlight-nanvix \
           && git -C /hyperlight-nanvix checkout "$HYPERLIGHT_NANVIX_REF"; }; \
    fi
RUN python3 -m venv /maturin \
 && /maturin/bin/python -m pip install --no-cache-dir -q maturin \
 && cd /hyperlight-nanvix \
 && /maturin/bin/maturin build --release --features "$HYPERLIGHT_NANVIX_FEATURES" \
      --interpreter /opt/venv/bin/python --out /wheels \
 && /opt/venv/bin/python -m pip install --no-cache-dir --no-deps /wheels/*.whl \
 && /opt/venv/bin/python -c "import hyperlight_nanvix"

FROM build AS hyperlight-false

FROM hyperlight-${WITH_HYPERLIGHT} AS venv
# The runtime installs nothing: pip (and setuptools, if the venv has it) stay behind. /opt/app joins sys.path.
RUN /opt/venv/bin/python -m pip uninstall -y -q pip setuptools wheel 2>/dev/null; \
    /opt/venv/bin/python -c "import sysconfig; open(sysconfig.get_path('purelib') + '/local_code_interpreter_app.pth', 'w').write('/opt/app\\n')"

# ---------------------------------------------------------------------------------------------------------------
# runtime: the base, tini and the virtual environment; no compilers, caches, tests or docs.
FROM ${PYTHON_IMAGE} AS runtime
COPY --from=init /tini /usr/local/bin/tini
COPY --from=venv /opt/venv /opt/venv
COPY --from=app /opt/app /opt/app
ENV PATH=/opt/app/bin:/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    VIRTUAL_ENV=/opt/venv \
    HOME=/tmp \
    TMPDIR=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    XDG_CONFIG_HOME=/tmp/.config \
    XDG_DATA_HOME=/tmp/.local/share \
    XDG_STATE_HOME=/tmp/.local/state \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1
USER 65534:65534
WORKDIR /tmp
EXPOSE 8090
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/tini", "--", "/opt/venv/bin/python", "-m", "local_code_interpreter", "--devui", "--port", "8090", "--host", "0.0.0.0", "--no-browser"]

# Labels last, so a new revision does not invalidate the layers above.
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=
LABEL org.opencontainers.image.title="local-code-interpreter" \
      org.opencontainers.image.description="A self-hosted code interpreter for AI agents, served through the Agent Framework DevUI" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.version="${VERSION}"
