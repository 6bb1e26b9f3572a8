"""One validated settings object, read from the environment (prefix ``CLEAR_``) at the edges only.

The defaults give the embedded mode: a SQLite database, kombu's SQLAlchemy transport on a
second SQLite file as broker and a local artifact directory, all under ``data_dir``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = "all-MiniLM-L6-v2"


class Settings(BaseSettings):
    """Service settings; every field can be set as ``CLEAR_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="CLEAR_", env_file=None, extra="ignore")

    data_dir: Path = Field(Path("var"), description="Folder of the embedded database, broker and artifacts.")
    database_url: str = Field("", description="SQLAlchemy URL; default sqlite:///<data_dir>/clear.db.")
    broker_url: str = Field("", description="Celery broker URL; default sqla+sqlite:///<data_dir>/broker.db.")
    artifact_url: str = Field("", description="fsspec URL of the artifact store; default <data_dir>/artifacts.")
    scratch_dir: Path | None = Field(None, description="Folder the service owns for its temporary files (spooled "
                                     "uploads, attempts' checkpoints); default <data_dir>/scratch.")
    model_dir: Path | None = Field(None, description="Folder whose sub-folders are selectable base models.")
    default_base_model: str = Field(DEFAULT_MODEL, description="Base model of a job that names none.")
    max_upload_bytes: int = Field(50 * 1024 * 1024, gt=0, description="Largest accepted upload (413 above).")
    max_rows: int = Field(1_000_000, gt=0, description="Most rows in one dataset.")
    min_rows_per_class: int = Field(2, ge=1, description="Fewest rows a class needs in a dataset.")
    max_errors_listed: int = Field(100, ge=1, description="Row errors listed in one 422 response.")
    max_job_seconds: int = Field(24 * 3600, gt=0, description="Longest a job may run; the broker waits longer.")
    worker_device: str | None = Field(None, description="Device the worker trains on (None: CUDA if present).")
    page_size_max: int = Field(1000, gt=0, description="Largest page a list route returns.")
    # database sessions of an API process (app.db, app.api.deps)
    db_pool_size: int = Field(20, ge=1, description="Requests of one API process that hold a database session at "
                              "once (others wait for one, in the event loop), and the connections kept open for them.")
    db_max_overflow: int = Field(20, ge=0, description="Connections opened beyond db_pool_size for work outside the "
                                 "requests' sessions: Idempotency-Key bookkeeping, streamed exports, /readyz, /metrics.")
    db_pool_timeout_s: float = Field(10.0, gt=0, description="Longest a request waits for a database session (or a "
                                     "connection) before it is answered 503 overloaded.")
    # uploads
    max_text_chars: int = Field(20_000, gt=0, description="Longest text (or text pair) cell, in characters.")
    max_uncompressed_bytes: int = Field(512 * 1024 * 1024, gt=0,
                                        description="Most bytes a gzip or Parquet upload may expand to (413 above).")
    body_idle_timeout_s: float = Field(60.0, gt=0, description="Longest wait for the next piece of a request body "
                                       "(408 after it, nothing kept): a client that stalls mid-upload frees its "
                                       "connection and its spooled part.")
    # leases, retries, resume, time limits
    max_attempts: int = Field(3, ge=1, description="Attempts of a job whose worker died before it is failed.")
    heartbeat_interval_s: float = Field(10.0, gt=0, description="How often a running job's heartbeat is renewed.")
    lease_timeout_s: float = Field(120.0, gt=0, description="A heartbeat older than this means the worker is gone.")
    reaper_interval_s: float = Field(30.0, gt=0, description="How often each worker looks for stale jobs.")
    redispatch_after_s: float = Field(600.0, gt=0, description="Resend a job queued this long (a lost message).")
    checkpoint_every_steps: int = Field(200, ge=0, description="Default mid-epoch checkpoint interval of a job.")
    progress_interval_s: float = Field(1.0, ge=0, description="Least time between progress writes of a job.")
    max_transient_retries: int = Field(5, ge=0, description="Retries of a job task after a database/broker fault.")
    worker_torch_threads: int | None = Field(None, ge=1, description="torch threads per worker process.")
    retry_after_s: int = Field(5, ge=1, description="Retry-After of a 503 while the database or broker is down.")
    idempotency_ttl_s: int = Field(24 * 3600, gt=0, description="How long an Idempotency-Key is remembered.")
    # keys, quotas (per tenant; a tenant's own max_* columns override these) and rate limits (per key)
    api_key_file: Path | None = Field(None, description="Where the embedded service writes the local tenant's "
                                                        "key at first start; default <data_dir>/api-key.")
    quota_concurrent_jobs: int = Field(20, ge=1, description="Jobs a tenant may have queued or running at once.")
    quota_stored_rows: int = Field(20_000_000, ge=1, description="Dataset rows a tenant may store in all.")
    quota_upload_bytes: int | None = Field(None, ge=1, description="Largest upload of a tenant (429 above); "
                                                                   "default max_upload_bytes.")
    quota_jobs_per_hour: int = Field(200, ge=1, description="Jobs a tenant may create in any 60 minutes.")
    quota_retry_after_s: int = Field(30, ge=1, description="Retry-After of a 429 for a quota with no known end.")
    rate_limit: str = Field("1200/minute", description="Requests per API key, in the limits package's notation "
                                                       "(e.g. '20/second;1200/minute').")
    rate_limit_storage_url: str = Field("", description="limits storage URI; default the broker when it is Redis "
                                                        "(shared by every API process), else memory://.")

    @field_validator("rate_limit")
    @classmethod
    def _check_rate_limit(cls, value: str) -> str:
        from limits import parse_many

        try:
            parse_many(value)
        except ValueError as exc:
            raise ValueError(f"rate_limit={value!r} is not a limits rate such as '1200/minute': {exc}") from exc
        return value

    @model_validator(mode="after")
    def _derive_urls(self) -> "Settings":
        base = self.data_dir.resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{base / 'clear.db'}"
        if not self.broker_url:
            self.broker_url = f"sqla+sqlite:///{base / 'broker.db'}"
        if not self.artifact_url:
            self.artifact_url = str(base / "artifacts")
        if self.api_key_file is None:
            self.api_key_file = base / "api-key"
        if self.scratch_dir is None:
            self.scratch_dir = base / "scratch"
        if not self.rate_limit_storage_url:
            redis = self.broker_url.startswith(("redis://", "rediss://"))
            self.rate_limit_storage_url = self.broker_url if redis else "memory://"
        return self

    @property
    def is_embedded(self) -> bool:
        """True when the database is a SQLite file (the one-machine mode)."""
        return self.database_url.startswith("sqlite")

    def scratch(self, kind: str) -> Path:
        """``<scratch_dir>/<kind>`` (``"uploads"`` for the API's spooled uploads, ``"attempts"`` for the
        workers' per-attempt folders); not created here. Everything under it is the service's own
        temporary data, removed on every exit path and at start-up."""
        return Path(self.scratch_dir) / kind

    def base_model_path(self, name: str) -> Path | None:
        """The folder of base model ``name`` under ``model_dir``; None for the packaged default, which
        ``clear_core`` finds itself. The one place the service and the workers map a job's ``base_model``."""
        return None if name == DEFAULT_MODEL else Path(self.model_dir or ".") / name


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
