"""``/v1/models``: the server's base models, what each is and which methods it supports."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from app.api.auth import PrincipalDep
from app.api.deps import SettingsDep
from app.schemas import ErrorResponse
from app.services import models

router = APIRouter(prefix="/v1/models", tags=["models"], responses={401: {"model": ErrorResponse}})


class ModelPublic(BaseModel):
    """A base model a job may name as ``base_model``."""

    id: str = Field(description="The name a job gives as base_model.")
    default: bool = Field(description="Whether a job naming no base_model gets this one.")
    architecture: str | None = Field(None, description="The model type, e.g. bert, deberta-v2, llama.")
    decoder: bool | None = Field(None, description="A decoder-only model (pools its last real token).")
    parameters: int | None = Field(None, description="Parameter count of the sequence classifier.")
    layers: int | None = Field(None, description="Transformer blocks CleaR routes.")
    hidden_size: int | None = None
    max_length: int | None = Field(None, description="Maximum tokens per row (position embeddings).")
    methods: list[str] = Field(default_factory=list, description="Methods a job may use on it.")
    refused: dict[str, str] = Field(default_factory=dict, description="Each other method, with the reason.")
    lora_modules: list[str] = Field(default_factory=list, description="The linear layers of one block, named "
                                    "within it (attention.self.query): what clear.lora_target_modules may name, "
                                    "by these names, their last parts (query) or the layers' qualified names.")
    layer_stack: str | None = Field(None, description="The qualified name of the block list "
                                    "(bert.encoder.layer): a qualified module name is <layer_stack>.<i>.<name>.")
    error: str | None = Field(None, description="Why this folder cannot be used at all (then methods is empty).")


class ModelList(BaseModel):
    """Every base model of this server (the same for every tenant)."""

    data: list[ModelPublic]
    count: int


@router.get("", response_model=ModelList)
async def list_models(principal: PrincipalDep, settings: SettingsDep) -> dict[str, Any]:
    """The server's base models: the default and each folder under ``CLEAR_MODEL_DIR``, each with its
    architecture, parameter count, maximum length and the methods it supports (from its structure; the first
    call after a model folder changes inspects it, which takes seconds)."""
    del principal  # any key: the catalogue holds no tenant's data
    items = await run_in_threadpool(models.catalogue, settings)
    return {"data": items, "count": len(items)}
