# The im2latex server (serve.py) with the shipped model, on the CPU:
#   docker build -t im2latex . && docker run --rm -p 8000:8000 im2latex      # then open http://localhost:8000
# Another model: mount its folder and pass it, e.g. -v $PWD/outputs/base:/model im2latex python serve.py
#   --host 0.0.0.0 --model /model
FROM python:3.11-slim

# CPU-only torch wheels (the default ones bundle CUDA, gigabytes this image does not use).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_HOME=/tmp/huggingface

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir --extra-index-url "$TORCH_INDEX" -r requirements.txt
COPY modeling/ modeling/
COPY server/ server/
COPY models/im2latex-base/ models/im2latex-base/
COPY serve.py .

USER nobody
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health')"
CMD ["python", "serve.py", "--host", "0.0.0.0", "--port", "8000"]
