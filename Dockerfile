# One image for every edgepipe role; compose.yaml picks the role with `command:`.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY simulators ./simulators
COPY dashboards ./dashboards
RUN pip install --no-cache-dir .
ENTRYPOINT ["edgepipe"]
