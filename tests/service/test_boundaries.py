"""Import boundaries are part of the design: the API imports no torch, the pipeline no Celery."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _modules_after(code: str) -> set[str]:
    script = f"{code}\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_api_imports_no_torch():
    loaded = _modules_after("from app.main import create_app\nfrom app.settings import Settings\n"
                            "import app.cli, app.services.configs, worker.celery_app\n"
                            "create_app(Settings(data_dir='/tmp/clear-boundary-check'))")
    assert not {m for m in loaded if m == "torch" or m.startswith(("torch.", "transformers", "peft"))}


def test_the_pipeline_imports_no_celery():
    loaded = _modules_after("import worker.pipeline")
    assert "torch" in loaded and not {m for m in loaded if m == "celery" or m.startswith("celery.")}
