"""The Celery worker: a thin task around ``worker.pipeline.execute_job``, which does the work."""
