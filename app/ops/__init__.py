"""Operations: JSON logs carrying the job id, Prometheus metrics and the health checks."""
