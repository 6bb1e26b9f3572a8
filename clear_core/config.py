"""Configuration objects for CleaR training: the method (``ClearConfig``) and the run (``TrainingConfig``).

Both are plain dataclasses whose ``__post_init__`` raises ``ValueError`` quoting the bad
value, in the manner of ``peft``'s tuner configs. They travel as one object each, are
stored with every checkpoint and adapter (``to_dict`` / ``from_dict``), and never read
the environment.

Symbols used in the docstrings: N training rows, K classes, L routed layers, B batch size,
E epochs, W warm-up epochs, c the routing cap.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

METHODS = ("lora", "adapter", "prefix", "bitfit", "full")
PEFT_METHODS = ("lora", "adapter", "prefix", "bitfit")
INFERENCE_MODES = ("expected", "full")
# label_quality methods (cleanlab.rank) and flag rules (cleanlab.filter); chosen by bench/detection.py
REPORT_SCORES = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")
FLAG_RULES = ("prune_by_noise_rate", "both", "confident_learning", "prune_by_class", "predicted_neq_given")
RELABEL_MODES = ("off", "hard", "soft")  # ClearConfig.relabel; the policy is clear_core/relabel.py
# Defaults chosen on held-out training rows, never the test set (bench/study.py, results in
# bench/results/study_defaults.jsonl; NoisyAG, 1,000 rows, 8 epochs, MiniLM LoRA, one seed):
# held-out accuracy 0.768 with the paper's c = 0.85 and lambda = 1, 0.798 with c = 1 and
# lambda = 0 (plain LoRA 0.800), and the best noise detection (AUROC 0.813, plain loss 0.754).
# lambda = 1 toward a teacher that is the epoch's own start held the model back.
DEFAULT_ROUTING_CAP = 1.0
DEFAULT_DISTILL_WEIGHT = 0.0
MIN_TEMPERATURE = 0.01  # the soft-target CE's logits / T: below it fp32 logits of a few tens overflow
# The smallest lora_alpha: below it the delta (scaled by alpha / r) is zero in effect, in bf16 or fp32 alike (1e-300
# was accepted and trained an adapter that changes nothing); LoRA's alpha is 1-64 in practice.
MIN_LORA_ALPHA = 1e-3
# Upper bounds that catch typos and abuse (1e308 epochs) before a job is queued.
CLEAR_LIMITS = {
    "warmup_epochs": 1000, "distill_weight": 100.0, "distill_ramp_epochs": 1000, "temperature": 100.0,
    "pass_every_epochs": 1000,
    "lora_r": 1024, "lora_alpha": 1e4, "adapter_size": 4096, "num_virtual_tokens": 512,
}
TRAINING_LIMITS = {
    "epochs": 1000, "learning_rate": 10.0, "weight_decay": 10.0, "batch_size": 4096, "eval_batch_size": 65536,
    "max_length": 8192, "seed": 2**32 - 1, "max_grad_norm": 1e6, "checkpoint_every_steps": 10**7,
    "pass_cache_tokens": 10**10,
}
# AdamW learning rates per method when the caller gives none. LoRA's from the defaults study
# (bench/defaults.py, results in bench/results/defaults/; issue 12): on TREC, SMS spam and Rotten
# Tomatoes with 30 % synthetic noise and on NoisyAG, 6 epochs, 1,000 rows, judged on held-out rows'
# given labels, 5e-4 left the model barely trained (loss near ln K on TREC and Rotten Tomatoes,
# still rising at the last epoch), 2e-3 learned all of them; 5e-3 was within noise of 2e-3 on the
# held-out rows while fitting the noisy labels much harder (final loss 0.16 on a 30 %-noise task),
# so the smaller was kept. The others from common practice on BERT-size encoders, not studied
# (adapters and BitFit ~1e-3, prefix tuning ~1e-2, full fine-tuning ~3e-5).
DEFAULT_LEARNING_RATES = {"lora": 2e-3, "adapter": 1e-3, "prefix": 1e-2, "bitfit": 1e-3, "full": 3e-5}


def _check_range(name: str, value: float, low: float, high: float, *, low_open: bool = False) -> None:
    bad = value <= low if low_open else value < low
    if bad or value > high:
        interval = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
        raise ValueError(f"{name}={value!r} is out of range: give a value in {interval}")


def _check_types(obj: Any, limits: dict[str, float]) -> None:
    """Raise ValueError naming the field if a value has the wrong type, is not finite, or exceeds its limit."""
    for f in dataclasses.fields(obj):
        value, kind = getattr(obj, f.name), str(f.type)
        if value is None and "None" in kind:
            continue
        if kind.startswith("bool"):
            if not isinstance(value, bool):
                raise ValueError(f"{f.name}={value!r} must be true or false")
        elif kind.startswith("int"):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{f.name}={value!r} must be an integer")
            if abs(value) >= 2**63:  # every integer setting is bounded far below; said without all its digits
                raise _beyond(f.name, value, limits)
        elif kind.startswith("float"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{f.name}={value!r} must be a finite number")
            if not _finite(value):
                if value != value:  # NaN
                    raise ValueError(f"{f.name}={value!r} must be a finite number")
                raise _beyond(f.name, value, limits)
        elif kind.startswith("str"):
            if not isinstance(value, str):
                raise ValueError(f"{f.name}={value!r} must be a string")
        elif kind.startswith("list"):
            if not isinstance(value, list) or not all(isinstance(x, str) and x for x in value):
                raise ValueError(f"{f.name}={value!r} must be a list of module names")
        limit = limits.get(f.name)
        if limit is not None and value > limit:
            raise ValueError(f"{f.name}={_shown(value)} is too large: give at most {_bound(limit)}")


def _bound(limit: float) -> str:
    return str(limit) if isinstance(limit, int) else f"{limit:g}"


def _beyond(name: str, value: int | float, limits: dict[str, float]) -> ValueError:
    """The error of a value past any number the setting could take (an infinity, an integer of 19+ digits)."""
    bound = f": give at most {_bound(limits[name])}" if name in limits and value > 0 else ""
    return ValueError(f"{name}={_shown(value)} is too {'large' if value > 0 else 'small'}{bound}")


def _finite(value: int | float) -> bool:
    """Whether ``value`` is a finite float (an int too large for a float, 1e400 written out, is not)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _shown(value: Any) -> str:
    """``repr(value)``; an integer of more than 30 digits as its first and last digits and its length."""
    if not isinstance(value, int) or abs(value) < 10**30:
        return repr(value)
    try:
        digits = str(abs(value))
    except ValueError:  # past Python's int-to-str limit (4,300 digits)
        return "an integer of more than 4,300 digits"
    return f"{'-' if value < 0 else ''}{digits[:6]}...{digits[-3:]} (an integer of {len(digits)} digits)"


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not supported: choose one of {', '.join(choices)}")


@dataclass
class ClearConfig:
    """The PEFT method, CleaR routing and noise-estimation settings of one run.

    Routing follows Kim et al., "CleaR", ACL 2024 (arXiv 2411.00873): after ``warmup_epochs``
    each PEFT module of layer l is on for row i with probability ``routing_cap * p_clean(i)``
    (a Bernoulli gate per row and layer that multiplies only the PEFT delta); during warm-up
    with probability ``routing_cap``. ``routed=False`` gives plain PEFT through the same code
    (every gate is 1) and ``method="full"`` full fine-tuning.

    ``relabel`` (off by default) additionally trains the rows the report's flag rule flags with a
    confident suggestion toward that suggestion, routed on (``clear_core.relabel``).

    Raises:
        ValueError: on an unknown method, inference mode, report score or relabel mode, a value
            out of its range (the message quotes the value and the accepted range), or
            ``relabel`` other than ``"off"``, or ``pass_every_epochs`` other than 1, on an unrouted run (plain
            PEFT, full fine-tuning); an empty ``lora_target_modules`` list, ``lora_alpha`` below ``MIN_LORA_ALPHA`` (1e-3), a
            ``temperature`` outside [0.01, 100], or a number too large for a float (every message starts
            with ``field=``).
    """

    method: str = field(default="lora", metadata={"help": "PEFT method: lora, adapter, prefix, bitfit or full."})
    routed: bool = field(default=True, metadata={"help": "CleaR routing on (True) or plain PEFT (False)."})
    routing_cap: float = field(
        default=DEFAULT_ROUTING_CAP,
        metadata={"help": "c in (0, 1]: the gate probability of a surely clean row; warm-up gates use c."},
    )
    warmup_epochs: int | None = field(
        default=None,
        metadata={
            "help": "W >= 0 epochs of plain CE before p_clean is estimated; None = min(3, epochs - 1), "
            "resolved by resolve_configs so that a routed run always routes."
        },
    )
    distill_weight: float = field(
        default=DEFAULT_DISTILL_WEIGHT,
        metadata={"help": "lambda >= 0: weight of the soft-target CE toward the epoch's teacher (paper: 1)."},
    )
    distill_ramp_epochs: int = field(
        default=0,
        metadata={"help": "Epochs over which lambda ramps linearly from 0 after warm-up (0 = full weight at once)."},
    )
    temperature: float = field(default=1.0, metadata={"help": "T in [0.01, 100] of the soft-target CE."})
    pass_every_epochs: int = field(
        default=1,
        metadata={"help": "k >= 1: the no-grad pass that re-estimates p_clean runs at the start of every k-th routed "
                  "epoch (the first after warm-up, then k later, ...); the epochs between route with the last "
                  "pass's p_clean and teacher. 1 = every epoch (the paper's schedule); the final pass for the "
                  "report always runs."},
    )
    loss_ema: float = field(
        default=0.0,
        metadata={"help": "Momentum in [0, 1) of an EMA over epochs of each row's loss before the GMM (0 = off)."},
    )
    gmm_per_class: bool = field(
        default=True,
        metadata={
            "help": "Fit one 2-component GMM per given class (default) instead of one global GMM; a global fit "
            "calls a whole not-yet-learned class noisy, routes it off and collapses it (docs/method.md)."
        },
    )
    route_head: bool = field(
        default=False,
        metadata={
            "help": "Also gate the classification head's updates per row with g ~ Bernoulli(c * p_clean) "
            "(stop-gradient; an extension beyond the paper, which trains the head on every row)."
        },
    )
    inference: str | None = field(
        default="full",
        metadata={
            "help": "Deterministic inference: 'full' (default) turns every delta fully on, 'expected' scales each "
            "delta by its expected gate c (not for prefix). 'full' measured ~2 points better held-out "
            "(bench/results/study_defaults.jsonl). None means 'full'."
        },
    )
    report_score: str = field(
        default="self_confidence",
        metadata={"help": "label_quality method (cleanlab.rank) on the softmax averaged over the post-warm-up "
                  "passes: " + ", ".join(REPORT_SCORES)},
    )
    flag_rule: str = field(
        default="prune_by_noise_rate",
        metadata={"help": "Confident-learning rule that flags rows (cleanlab.filter filter_by): " + ", ".join(FLAG_RULES)},
    )
    flag_when_unreliable: bool = field(
        default=False,
        metadata={"help": "Keep the flags even when the report's reliability verdict is 'not reliable' "
                  "(by default they are withheld and every row keeps its scores)."},
    )
    relabel: str = field(
        default="off",
        metadata={"help": "Correct, not only bypass (routed runs only): from each post-warm-up pass on, rows the "
                  "report's flag rule flags and whose suggested class has mean probability >= relabel_threshold "
                  "train toward it, routed on as clean: 'off' (default), 'hard' (CE on the suggested class) or "
                  "'soft' (CE against the mean predicted distribution, SelfMix's target with T = 1)."},
    )
    relabel_threshold: float = field(
        default=0.9,
        metadata={"help": "In (0, 1]: minimum mean probability of the suggested class for a flagged row to be "
                  "relabelled (relabel != 'off')."},
    )
    # method hyperparameters
    lora_r: int = field(default=8, metadata={"help": "LoRA rank r >= 1."})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA alpha in [0.001, 1e4] (scaling = alpha / r)."})
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout on the LoRA input, in [0, 1)."})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Module names LoRA wraps (non-empty; each must name linear layers in the "
                                "model's blocks, matched as peft does, by the end of their qualified names, and only "
                                "the blocks' layers are wrapped: 'dense' on BERT is not the pooler's); None lets "
                                "peft pick (query, value for BERT)."}
    )
    adapter_size: int = field(default=16, metadata={"help": "Bottleneck width of the adapter, >= 1."})
    num_virtual_tokens: int = field(default=20, metadata={"help": "Prefix length of prefix tuning, >= 1."})

    def __post_init__(self) -> None:
        _check_types(self, CLEAR_LIMITS)
        _check_choice("method", self.method, METHODS)
        _check_range("routing_cap", float(self.routing_cap), 0.0, 1.0, low_open=True)
        if self.warmup_epochs is not None and self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs={self.warmup_epochs!r} must be an integer >= 0")
        if self.distill_weight < 0:
            raise ValueError(f"distill_weight={self.distill_weight!r} must be >= 0")
        if self.pass_every_epochs < 1:
            raise ValueError(f"pass_every_epochs={self.pass_every_epochs!r} must be an integer >= 1")
        if self.distill_ramp_epochs < 0:
            raise ValueError(f"distill_ramp_epochs={self.distill_ramp_epochs!r} must be >= 0")
        if self.temperature < MIN_TEMPERATURE:  # logits / T overflow past it
            raise ValueError(f"temperature={self.temperature!r} is too small: give a value in "
                             f"[{MIN_TEMPERATURE}, {CLEAR_LIMITS['temperature']:g}]")
        if not 0.0 <= self.loss_ema < 1.0:
            raise ValueError(f"loss_ema={self.loss_ema!r} is out of range: give a value in [0, 1)")
        _check_choice("report_score", self.report_score, REPORT_SCORES)
        _check_choice("flag_rule", self.flag_rule, FLAG_RULES)
        _check_choice("relabel", self.relabel, RELABEL_MODES)
        _check_range("relabel_threshold", float(self.relabel_threshold), 0.0, 1.0, low_open=True)
        if self.lora_r < 1 or self.adapter_size < 1 or self.num_virtual_tokens < 1:
            raise ValueError(
                f"lora_r={self.lora_r!r}, adapter_size={self.adapter_size!r} and "
                f"num_virtual_tokens={self.num_virtual_tokens!r} must all be >= 1"
            )
        if self.lora_alpha <= 0:
            raise ValueError(f"lora_alpha={self.lora_alpha!r} must be > 0 (the LoRA delta is scaled by alpha / r)")
        if self.lora_alpha < MIN_LORA_ALPHA:
            raise ValueError(f"lora_alpha={self.lora_alpha!r} is too small: the LoRA delta is scaled by alpha / r, so "
                             f"it would change nothing; give a value in [{MIN_LORA_ALPHA:g}, "
                             f"{CLEAR_LIMITS['lora_alpha']:g}] (16 by default)")
        if self.lora_target_modules is not None and not self.lora_target_modules:
            raise ValueError("lora_target_modules=[] names no module: give module names (e.g. ['query', 'value']) "
                             "or leave it out (null) for the model's default targets")
        if self.lora_target_modules is not None and (len(self.lora_target_modules) > 256 or
                                                     any(len(m) > 300 for m in self.lora_target_modules)):
            longest = max(len(m) for m in self.lora_target_modules)
            raise ValueError(f"lora_target_modules=<{len(self.lora_target_modules)} names, the longest of {longest} "
                             "characters> is too long: give at most 256 names of at most 300 characters each "
                             "(module names such as 'query' or 'attention.self.query')")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout={self.lora_dropout!r} is out of range: give a value in [0, 1)")
        if self.method == "full" and self.routed:
            # Full fine-tuning has no PEFT delta to gate: it is a baseline only.
            self.routed = False
        if self.pass_every_epochs != 1 and not self.routed:
            raise ValueError(f"pass_every_epochs={self.pass_every_epochs!r} needs routed=true: an unrouted run makes "
                             "no per-epoch pass (only the final one for its report); leave it at 1 or set routed=true")
        if self.relabel != "off" and not self.routed:
            # the relabel set comes from CleaR's per-epoch passes, which only a routed run makes
            raise ValueError(
                f"relabel={self.relabel!r} needs routed=true: the relabelled rows are decided on CleaR's "
                "per-epoch passes, which plain PEFT and full fine-tuning do not run; set relabel='off' or routed=true"
            )
        if self.inference is None:
            self.inference = "full"
        _check_choice("inference", self.inference, INFERENCE_MODES)
        if self.method == "prefix" and self.inference == "expected":
            raise ValueError(
                "inference='expected' is not available for prefix tuning: a prefix is masked in or out of "
                "attention, so its expected gate has no exact deterministic form; use inference='full'"
            )

    @property
    def inference_gate(self) -> float:
        """The constant gate in [0, 1] every PEFT delta gets at inference (c or 1)."""
        return float(self.routing_cap) if self.inference == "expected" and self.routed else 1.0

    def to_dict(self) -> dict[str, Any]:
        """All fields as a JSON-serialisable dict (resolved defaults included)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ClearConfig":
        """Build from ``to_dict`` output; unknown keys raise ``ValueError`` naming them."""
        return cls(**_known_fields(cls, data))


@dataclass
class TrainingConfig:
    """Budget and optimisation settings of one run (the same for every method compared).

    Raises:
        ValueError: on a non-positive epoch count, batch size, learning rate or length, a seed outside
            [0, 2**32 - 1], a number too large for a float, or an unknown scheduler / precision (every message
            starts with ``field=``).
    """

    epochs: int = field(default=6, metadata={"help": "E >= 1 training epochs."})
    learning_rate: float | None = field(
        default=None,
        metadata={"help": "AdamW peak learning rate, > 0; None = the method's default (DEFAULT_LEARNING_RATES)."},
    )
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay, >= 0."})
    batch_size: int = field(default=32, metadata={"help": "Training batch size B >= 1."})
    eval_batch_size: int | None = field(
        default=None,
        metadata={"help": "Batch size of the no-grad passes (p_clean, evaluation), >= 1; None = per device: "
                  "64 on CPU, 512 on CUDA."},
    )
    max_length: int = field(default=128, metadata={"help": "Tokens per row after truncation, >= 8."})
    seed: int = field(default=0, metadata={"help": "Seed in [0, 2**32 - 1] of data order, gates, dropout and head "
                                           "init."})
    lr_scheduler: str = field(default="linear", metadata={"help": "'linear' (warm-up then decay) or 'constant'."})
    warmup_ratio: float = field(default=0.06, metadata={"help": "Fraction of steps of LR warm-up, in [0, 1)."})
    max_grad_norm: float | None = field(default=1.0, metadata={"help": "Gradient clipping norm; None = off."})
    validation_fraction: float = field(
        default=0.1,
        metadata={"help": "Fraction in [0, 0.5] of rows held out of training, stratified by given label, and "
                  "scored out-of-sample: the report's reliability verdict and learning checks rest on them."},
    )
    keep: str = field(
        default="last",
        metadata={"help": "Weights kept at the end: 'last' epoch or 'best' epoch by held-out accuracy."},
    )
    checkpoint_every_steps: int = field(
        default=0, metadata={"help": "Also checkpoint every n optimizer steps (0 = at epoch ends only)."}
    )
    device: str | None = field(default=None, metadata={"help": "'cpu', 'cuda', 'cuda:1'...; None picks CUDA if present."})
    precision: str = field(
        default="auto",
        metadata={"help": "'auto' (fp32 weights with bf16 autocast on CUDA, and on a CPU with native bf16 "
                  "(AMX-BF16 / AVX512-BF16) for backbones of hidden size >= 256, else fp32), 'bf16' (on CUDA the frozen backbone is also loaded in bf16, "
                  "halving its memory; trained parameters stay fp32; bf16 autocast on any CPU) or 'fp32' (no "
                  "autocast anywhere)."},
    )
    pass_precision: str = field(
        default="auto",
        metadata={"help": "The routing pass (the per-row losses behind p_clean, before each routed epoch): 'auto' "
                  "(on a CPU that trains without bf16 autocast, a dynamic int8 copy of the network, 1.4-3x faster; "
                  "elsewhere as the training), 'int8' (that copy on any CPU; ignored on CUDA) or 'same' (the "
                  "training's precision). Evaluation, held-out rows and the final pass behind the noise report "
                  "always run in the training's precision (clear_core.int8)."},
    )
    length_bucketing: bool = field(
        default=True,
        metadata={"help": "Draw training batches of rows of similar length (shuffled within and across buckets of "
                  "50 batches, seeded; clear_core.batching) so less padding is computed; false = uniformly random "
                  "batches."},
    )
    merge_for_pass: bool = field(
        default=True,
        metadata={"help": "Fold LoRA / BitFit deltas into the frozen weights for the no-grad passes (restored from "
                  "a copy afterwards; clear_core.merge); false = run the unmerged layers."},
    )
    pass_cache_tokens: int = field(
        default=8_000_000,
        metadata={"help": "Most padded tokens of the no-grad passes' batches kept between passes (int32 on the "
                  "CPU, 12 bytes a token with token types); rows past it are re-padded every pass; 0 = never keep."},
    )
    pooled_last_layer: bool = field(
        default=True,
        metadata={"help": "On a [CLS]-pooled classifier (BERT, RoBERTa, XLM-RoBERTa, ELECTRA) the last block computes "
                  "only the row the head reads (keys and values over every token): the same logits and gradients, "
                  "every step and pass about a seventh faster on a 6-layer model (clear_core.pooled); false = the "
                  "full last block. Other architectures always run the full block."},
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata={"help": "Recompute the backbone's activations in the backward pass instead of keeping them "
                  "(less memory for larger backbones, about a third more compute)."},
    )

    def __post_init__(self) -> None:
        _check_types(self, TRAINING_LIMITS)
        if self.device is not None and not re.fullmatch(r"cpu|cuda(:\d+)?|mps", self.device):
            raise ValueError(f"device={self.device!r} is not a device name: use 'cpu', 'cuda', 'cuda:N' or 'mps'")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:  # an integer: _check_types saw to that
                raise ValueError(f"{name}={value!r} must be an integer >= 1")
        if self.seed < 0:
            raise ValueError(f"seed={self.seed!r} must be an integer in [0, {TRAINING_LIMITS['seed']}]")
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise ValueError(f"learning_rate={self.learning_rate!r} must be > 0")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay={self.weight_decay!r} must be >= 0")
        if self.max_length < 8:
            raise ValueError(f"max_length={self.max_length!r} must be >= 8 tokens")
        _check_choice("lr_scheduler", self.lr_scheduler, ("linear", "constant"))
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio={self.warmup_ratio!r} is out of range: give a value in [0, 1)")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError(f"max_grad_norm={self.max_grad_norm!r} must be > 0 or None")
        _check_range("validation_fraction", float(self.validation_fraction), 0.0, 0.5)
        _check_choice("keep", self.keep, ("last", "best"))
        if self.pass_cache_tokens < 0:
            raise ValueError(f"pass_cache_tokens={self.pass_cache_tokens!r} must be >= 0")
        if self.checkpoint_every_steps < 0:
            raise ValueError(f"checkpoint_every_steps={self.checkpoint_every_steps!r} must be >= 0")
        _check_choice("precision", self.precision, ("auto", "bf16", "fp32"))
        _check_choice("pass_precision", self.pass_precision, ("auto", "int8", "same"))

    def to_dict(self) -> dict[str, Any]:
        """All fields as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    def resolved(self, clear: ClearConfig) -> "TrainingConfig":
        """A copy with ``learning_rate`` filled from ``DEFAULT_LEARNING_RATES[clear.method]`` if None."""
        if self.learning_rate is not None:
            return dataclasses.replace(self)
        return dataclasses.replace(self, learning_rate=DEFAULT_LEARNING_RATES[clear.method])

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainingConfig":
        """Build from ``to_dict`` output; unknown keys raise ``ValueError`` naming them."""
        return cls(**_known_fields(cls, data))


DEFAULT_WARMUP_EPOCHS = 3


def block_module_names(block_modules: list[str], layer_stack: str, layers: int) -> list[str]:
    """The qualified names of every block's linear layers: ``<layer_stack>.<i>.<name>`` for i < ``layers``
    (``bert.encoder.layer.0.attention.self.query``), as peft names the modules it may wrap."""
    return [f"{layer_stack}.{i}.{m}" for i in range(layers) for m in block_modules]


def matched_target_modules(target: str, qualified: list[str]) -> list[str]:
    """The names of ``qualified`` that ``target`` matches as peft matches a list of ``target_modules``: the
    name equals it or ends with ``"." + target``."""
    return [q for q in qualified if q == target or q.endswith(f".{target}")]


def unmatched_target_modules(targets: list[str], block_modules: list[str], layer_stack: str,
                             layers: int) -> list[str]:
    """The names in ``targets`` (``ClearConfig.lora_target_modules``) that match no linear layer of a block.

    A target matches as peft matches ``target_modules`` given as a list, but only among the blocks' linear
    layers (:func:`block_module_names`): ``query``, ``self.query``, ``attention.self.query`` and
    ``bert.encoder.layer.3.attention.self.query`` all match on BERT; ``pooler.dense``, ``classifier`` and
    ``bert.encoder.layer.99.attention.self.query`` (past the last block) do not.

    Args:
        targets: module names, non-empty strings.
        block_modules: the names of one block's linear layers relative to the block (every block of a stack
            has the same), e.g. ``attention.self.query``.
        layer_stack: the block list's qualified name, e.g. ``bert.encoder.layer``.
        layers: L, the number of blocks.

    Returns:
        The unmatched targets, in their given order (empty: every target names linear layers of the blocks).
    """
    qualified = block_module_names(block_modules, layer_stack, layers)
    return [t for t in targets if not matched_target_modules(t, qualified)]


def default_warmup(epochs: int) -> int:
    """The warm-up a run of ``epochs`` (>= 1) gets when it names none: ``min(3, epochs - 1)`` epochs, so that a
    routed run always routes (0 for a one-epoch run)."""
    return min(DEFAULT_WARMUP_EPOCHS, max(0, int(epochs) - 1))


def resolve_configs(clear: ClearConfig, training: TrainingConfig) -> tuple[ClearConfig, TrainingConfig]:
    """Both configs with every run-dependent default filled in: the ones a run actually uses.

    ``warmup_epochs=None`` becomes ``min(3, epochs - 1)`` (0 for a one-epoch run, whose
    p_clean then comes from the untrained model); ``learning_rate=None`` the method's
    default (``DEFAULT_LEARNING_RATES``).

    Raises:
        ValueError: for a routed run whose explicit warm-up covers every epoch (routing would
            never start); the message starts with ``warmup_epochs=``.
    """
    if clear.warmup_epochs is None:
        clear = dataclasses.replace(clear, warmup_epochs=default_warmup(training.epochs))
    elif clear.routed and clear.warmup_epochs >= training.epochs:
        raise ValueError(
            f"warmup_epochs={clear.warmup_epochs} is not below epochs={training.epochs}: CleaR routing would never "
            "start; lower warmup_epochs, train more epochs, or set routed=false for plain PEFT"
        )
    return clear, training.resolved(clear)


def _known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}: accepted fields are {sorted(names)}")
    return dict(data)
