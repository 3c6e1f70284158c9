FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ledger ledger
COPY payout_engine payout_engine
COPY consumers consumers
COPY entrypoints entrypoints
RUN pip install --no-cache-dir .
ENTRYPOINT []
