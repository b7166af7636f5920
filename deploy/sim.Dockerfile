# minerwatch-sim image, for deploy/compose.sim.yaml (the simulated fleet as the miners):
#   docker build -f deploy/sim.Dockerfile -t minerwatch-sim .
# Built like the services' images (services/*/Dockerfile), from the same PYTHON_IMAGE.
ARG PYTHON_IMAGE=python:3.12-slim

FROM ${PYTHON_IMAGE} AS build
ARG UV_VERSION=0.13.9
RUN python3 -m venv /opt/uv && /opt/uv/bin/pip install --quiet --no-cache-dir uv==${UV_VERSION} \
 && ln -s /opt/uv/bin/uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_NO_CACHE=1 UV_PROJECT_ENVIRONMENT=/app \
    UV_PYTHON_DOWNLOADS=never UV_PYTHON_PREFERENCE=only-system
WORKDIR /src
COPY pyproject.toml uv.lock ./
COPY shared/pyproject.toml shared/
COPY sim/pyproject.toml sim/
COPY services/collector/pyproject.toml services/collector/
COPY services/store/pyproject.toml services/store/
COPY services/alerts/pyproject.toml services/alerts/
COPY services/api/pyproject.toml services/api/
RUN uv sync --frozen --no-dev --no-editable --no-install-workspace --package minerwatch-sim
COPY sim/ sim/
RUN uv sync --frozen --no-dev --no-editable --package minerwatch-sim

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 minerwatch \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin minerwatch
COPY --from=build /app /app
ENV PATH=/app/bin:$PATH PYTHONUNBUFFERED=1
USER 10001:10001
CMD ["minerwatch-sim"]
