# The control plane image (web, worker and scheduler run the same image with different commands).
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN apt-get update && apt-get install -y --no-install-recommends postgresql-client \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
RUN useradd --system app && chown -R app /app
USER app
EXPOSE 8000
CMD ["gunicorn", "platform_site.wsgi", "-b", "0.0.0.0:8000", "-w", "3"]
