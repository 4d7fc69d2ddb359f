# One image for every Osmanthus service: department nodes, the coordinator, the init job, the
# provincial sync job and the reference provincial receiver.
# docker-compose.yml picks the subcommand per service and defines each service's health check.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# .dockerignore admits only what the package build needs.
COPY pyproject.toml README.md ./
COPY osmanthus/ osmanthus/
COPY node/ node/
COPY coordinator/ coordinator/
COPY sdk/ sdk/
COPY certs/ certs/
COPY policies/ policies/
COPY province/ province/
COPY syncjob/ syncjob/
COPY portal/ portal/
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed uid/gid so that files on volumes keep one owner across image rebuilds.
RUN groupadd --system --gid 10001 osmanthus \
 && useradd --system --uid 10001 --gid osmanthus --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin osmanthus

# The wheel is bind-mounted rather than copied, so no layer keeps a second copy of it. The image
# runs every service, so it installs every extra (a requester needs only the base install).
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install "$(echo /wheels/osmanthus-*.whl)[all]" \
 && osmanthus --help >/dev/null

# The default Cedar policies ship inside the package; the image also puts them at a fixed path
# that docker-compose.yml passes to --policy, so a department replaces its own by mounting a file.
COPY policies/node.cedar policies/central.cedar /etc/osmanthus/policies/

# Mount points owned by the service user: Docker copies this ownership into a named volume the
# first time it is mounted there, so the non-root services can write certificates, data and state.
# /secrets (CA and issuer keys), /keys (the coordinator's private keys), /sync (the sync job's
# keys and token) and /province (the provincial receiver's key) are owner-only. init writes a
# coordinator replica's keys into /replica-keys/NAME (docker-compose.replicas.yml): add a
# further replica's NAME here.
RUN mkdir -p /certs /data /state /secrets /keys /sync /province /replica-keys/coordinator-2 \
 && chown osmanthus:osmanthus /certs /data /state /secrets /keys /sync /province \
    /replica-keys /replica-keys/coordinator-2 \
 && chmod 0700 /secrets /keys /sync /province /replica-keys /replica-keys/coordinator-2

USER osmanthus:osmanthus
ENTRYPOINT ["osmanthus"]
CMD ["--help"]
