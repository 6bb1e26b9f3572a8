"""The CleaR training loop (Kim et al., "CleaR", ACL 2024; REFERENCE_CODE.md Sec. 1 minus faults B1-B6).

A fraction of the rows (``TrainingConfig.validation_fraction``, stratified by given label) is
held out of training and scored out-of-sample. Per epoch e: during the W warm-up epochs plain
CE with gates ~ Bernoulli(c). From epoch W on (every ``ClearConfig.pass_every_epochs``-th epoch; the epochs
between route with the last pass's estimate), a no-grad pass (dropout off, LoRA / BitFit deltas folded
into the weights, model back in train mode afterwards) feeds the :class:`~clear_core.estimate.NoiseEstimator`, which turns each row's
loss into p_clean (``clear_core.p_clean``); the :class:`~clear_core.routing.Router` draws
g(i, l) ~ Bernoulli(c * p_clean(i)) and training minimises
CE(given) + lambda * T^2 * CE(softmax(teacher / T), softmax(logits / T)) with the pass's logits
as teacher. With ``ClearConfig.relabel`` on, the :class:`~clear_core.relabel.Relabeller` then picks,
from the estimator's state, the rows the report's flag rule flags with a confident suggestion; they
train toward the suggested label (hard or soft) and are routed as clean (p_clean = P_MAX) for the
epoch; every other row trains as without it. After the last epoch a final pass gives the estimator
its last look and the noise report (confident learning, noise matrix, reliability verdict) is built
from it; the report judges the given labels, relabelled or not.
Symbols: N rows, K classes, B batch rows, L layers, E epochs, W warm-up epochs.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .batching import PassBatches, bucketed_batches, epoch_seed, random_batches
from .callbacks import CallbackList, TrainerCallback, TrainerState, TrainingCancelled
from .checkpoint import data_fingerprint, latest_checkpoint, read_checkpoint, rng_state, set_rng_state, write_checkpoint
from .config import ClearConfig, TrainingConfig, resolve_configs
from .data import (TextClassificationData, TokenizedTexts, build_label_names, encode_gold_labels, encode_labels,
                   stratified_holdout, subset)
from .evaluation import epoch_metrics
from .model import CPU_BF16_MIN_HIDDEN, ClearModel, cpu_has_native_bf16, hidden_size
from .estimate import NoiseEstimator
from .relabel import Relabeller
from .report import NoiseReport
from .routing import Router

CPU_PASS_BATCH_SIZE = 64  # rows per batch of the no-grad passes on a CPU (TrainingConfig.eval_batch_size=None)


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        model: the trained :class:`ClearModel`, in deterministic inference mode.
        label_names: K class names (logit order).
        history: per-epoch metric dicts (``epoch`` is 1-based).
        metrics: the last epoch's metrics plus final noise-detection scores when gold labels exist.
        report: the :class:`NoiseReport` of every row (training and held-out).
        state: the final :class:`TrainerState`.
        wall_time_s: seconds spent in this call.
        dynamics: the :class:`~clear_core.estimate.NoiseEstimator` with every pass's losses, p_clean,
            given-label confidence and the mean softmax (for comparing scoring rules).
        warnings: the run's learning warnings (see ``TrainerCallback.on_warning``).
    """

    model: ClearModel
    label_names: list[str]
    history: list[dict[str, Any]]
    metrics: dict[str, Any]
    report: NoiseReport
    state: TrainerState
    wall_time_s: float
    dynamics: NoiseEstimator
    warnings: list[dict[str, Any]]

    def save(self, directory: str | Path, *, training: dict[str, Any] | None = None) -> Path:
        """Save the adapter (:func:`clear_core.io.save_adapter`) with a model card carrying this run's
        report summary (rows, estimated noise, verdict) and final metrics."""
        return self.model.save(directory, training=training,
                               card={"report_summary": self.report.summary(), "metrics": self.metrics})


def train(
    train_data: TextClassificationData,
    *,
    clear: ClearConfig | None = None,
    training: TrainingConfig | None = None,
    model_path: str | Path | None = None,
    eval_data: TextClassificationData | None = None,
    label_names: Sequence[Any] | None = None,
    callbacks: Sequence[TrainerCallback] = (),
    checkpoint_dir: str | Path | None = None,
    resume_from: str | Path | None = None,
) -> TrainResult:
    """Fine-tune ``model_path`` (default all-MiniLM-L6-v2) on ``train_data`` with CleaR.

    Args:
        train_data: N rows with given labels (``gold_labels``, if any, only score the report).
        clear: method and routing settings (default :class:`ClearConfig`).
        training: budget and optimisation settings (default :class:`TrainingConfig`).
        model_path: local Hugging Face model directory, or None / ``"default"``.
        eval_data: held-out rows for per-epoch accuracy / macro-F1 and ``keep="best"``.
        label_names: the K classes in order; default: the sorted distinct given labels.
        callbacks: :class:`TrainerCallback` objects.
        checkpoint_dir: where checkpoints go (epoch ends, and every
            ``checkpoint_every_steps``); None = no checkpoints.
        resume_from: a checkpoint folder, or a ``checkpoint_dir`` (its newest checkpoint).

    Returns:
        A :class:`TrainResult`.

    Raises:
        ValueError: bad data, labels outside ``label_names``, fewer than 2 classes, a model
            path that does not exist, a method the backbone cannot take, or a checkpoint of
            another run.
        TypeError: a backbone without a transformer layer stack.
        TrainingCancelled: a callback asked training to stop.
    """
    clear, training = resolve_configs(clear or ClearConfig(), training or TrainingConfig())
    return _Trainer(
        train_data, clear, training, model_path, eval_data, label_names,
        list(callbacks), checkpoint_dir,
    ).run(resume_from)


def pick_device(name: str | None) -> torch.device:
    """The device a run uses: ``name`` if given and present, else CUDA when present, else CPU.

    Raises:
        ValueError: ``name`` names a device this machine does not have (``cuda`` without a GPU,
            ``cuda:N`` past the last GPU, ``mps`` off Apple silicon).
    """
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"device={name!r} is not available here ({torch.cuda.device_count()} CUDA devices): "
                         "leave device unset or use 'cpu'")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={name!r} is not available here: leave device unset or use 'cpu'")
    return device


class _Trainer:
    def __init__(self, data, clear, training, model_path, eval_data, label_names, callbacks, checkpoint_dir):
        self.data, self.clear, self.cfg = data, clear, training
        self.names = build_label_names(data.labels, label_names)
        given = encode_labels(data.labels, self.names)
        # held-out rows: never trained on, scored out-of-sample; the report's verdict rests on them
        self.train_idx, self.held_idx = stratified_holdout(given, training.validation_fraction, seed=training.seed)
        self.given, self.held_given = given[self.train_idx], given[self.held_idx]
        self.eval_y = encode_labels(eval_data.labels, self.names) if eval_data is not None else None
        self.gold = encode_gold_labels(data.gold_labels, self.names) if data.gold_labels is not None else None
        self.device = pick_device(training.device)
        cuda = self.device.type == "cuda"
        self.autocast = cuda and training.precision in ("auto", "bf16")
        # per device: on a CPU, batches of 64 ran the pass 10-19 % faster than 128 (bench/pass_batch_size.py,
        # BENCHMARKS.md section 8.1); a GPU wants large batches
        self.eval_batch_size = training.eval_batch_size or (512 if cuda else CPU_PASS_BATCH_SIZE)
        torch.manual_seed(training.seed)
        bf16_weights = cuda and training.precision == "bf16"
        self.model = ClearModel.build(model_path, clear, self.names, training.max_length,
                                      dtype=torch.bfloat16 if bf16_weights else None,
                                      pooled_last_layer=training.pooled_last_layer)
        if bf16_weights:  # the frozen backbone in bf16; what trains stays fp32 (AdamW state and updates)
            for p in self.model.parameters():
                if p.requires_grad:
                    p.data = p.data.float()
        if training.gradient_checkpointing:
            self.model.enable_gradient_checkpointing()
        self.model.to(self.device)
        if self.device.type == "cpu" and training.precision != "fp32":
            # bf16 autocast on a CPU with native bf16 pays for its casts only on wide layers: a MiniLM step
            # (hidden 384) ran 1.6x faster, a test-sized model (hidden 32) 2x slower (bench/cost.py --suite training)
            self.autocast = training.precision == "bf16" or (
                cpu_has_native_bf16() and hidden_size(self.model.model) >= CPU_BF16_MIN_HIDDEN)
        # the routing pass on a dynamic int8 copy where the CPU trains in fp32 (clear_core.int8; BENCHMARKS.md 8.2)
        from .int8 import available as int8_available

        self.routing_int8 = self.device.type == "cpu" and int8_available() and (
            training.pass_precision == "int8" or (training.pass_precision == "auto" and not self.autocast))
        max_positions = getattr(self.model.model.config, "max_position_embeddings", None)
        if max_positions is not None and training.max_length > max_positions:
            raise ValueError(
                f"max_length={training.max_length} is longer than the model's {max_positions} positions: "
                f"give max_length <= {max_positions}"
            )
        self.tokens = self._tokenize(subset(data, self.train_idx))
        self.held_tokens = self._tokenize(subset(data, self.held_idx)) if len(self.held_idx) else None
        self.eval_tokens = self._tokenize(eval_data) if eval_data is not None else None
        # the no-grad passes' batches: padded once, reused every epoch (within training.pass_cache_tokens)
        self.train_pass, self.held_pass, self.eval_pass = (
            None if t is None else PassBatches(t, self.eval_batch_size, max_cached_tokens=training.pass_cache_tokens)
            for t in (self.tokens, self.held_tokens, self.eval_tokens))
        self._epoch_batches: tuple[int, list[np.ndarray]] | None = None
        self.callbacks = CallbackList(callbacks)
        self.checkpoint_dir = checkpoint_dir
        self.estimator = NoiseEstimator(self.given, held_given=self.held_given, num_classes=len(self.names),
                                        loss_ema=clear.loss_ema, per_class=clear.gmm_per_class, seed=training.seed)
        self.relabel = Relabeller(clear.relabel, threshold=clear.relabel_threshold, label_names=self.names,
                                  flag_rule=clear.flag_rule, quality=clear.report_score,
                                  flag_when_unreliable=clear.flag_when_unreliable)
        self.gates_rng = torch.Generator().manual_seed(training.seed)
        self.router = Router(self.model.controller, routing_cap=clear.routing_cap, routed=clear.routed,
                             route_head=clear.route_head, generator=self.gates_rng)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=training.learning_rate, weight_decay=training.weight_decay)
        steps = math.ceil(len(self.train_idx) / training.batch_size)
        self.state = TrainerState(num_epochs=training.epochs, steps_per_epoch=steps, max_steps=steps * training.epochs)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.fingerprint = data_fingerprint(data.texts, data.labels)
        self.warnings: list[dict[str, Any]] = []
        # held-out logits of the epoch end, reused by the next epoch's pass (same weights, same step)
        self._held_cache: tuple[int, np.ndarray] | None = None

    def _tokenize(self, data: TextClassificationData) -> TokenizedTexts:
        return TokenizedTexts(self.model.tokenizer, data.texts, data.text_pairs, self.cfg.max_length)

    def _lr_factor(self, step: int) -> float:
        warm = int(self.cfg.warmup_ratio * self.state.max_steps)
        if step < warm:
            return (step + 1) / (warm + 1)
        if self.cfg.lr_scheduler == "constant":
            return 1.0
        return max(0.0, (self.state.max_steps - step) / max(1, self.state.max_steps - warm))

    # ---- main loop -------------------------------------------------------------------------
    def run(self, resume_from) -> TrainResult:
        start = time.perf_counter()
        if resume_from is not None:
            self._resume(resume_from)
        self.model.train()
        try:
            self.callbacks.fire("on_train_begin", self.state)
            while self.state.epoch < self.cfg.epochs:
                self._run_epoch()
            if self.cfg.keep == "best" and self.best_weights is not None:
                self._load_weights(self.best_weights)
            final_logits, held_logits = self._clean_pass(self.cfg.epochs)
        finally:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        self.model.use_inference_gates()
        self.model.eval()
        report = self._report(final_logits, held_logits)
        metrics = dict(self.state.log_history[-1]) if self.state.log_history else {}
        metrics.update(self._report_metrics(report))
        self.callbacks.fire("on_train_end", self.state)
        return TrainResult(self.model, self.names, list(self.state.log_history), metrics, report, self.state,
                           time.perf_counter() - start, self.estimator, list(self.warnings))

    def _report(self, final_logits: np.ndarray, held_logits: np.ndarray | None) -> NoiseReport:
        estimate = self.estimator.finish(final_logits, self.names, held_final_logits=held_logits,
                                         filter_by=self.clear.flag_rule, quality=self.clear.report_score,
                                         flag_when_unreliable=self.clear.flag_when_unreliable)
        if not estimate.reliability.reliable:
            self._warn("end", estimate.reliability)
        return NoiseReport.from_estimate(estimate, self.names, positions=np.concatenate([self.train_idx, self.held_idx]),
                                         score=self.clear.report_score,
                                         flag_rule=self.clear.flag_rule, ids=self.data.ids)

    def _warn(self, stage: str, reliability) -> None:
        """Record and announce that the model does not seem to learn (CallbackList ``on_warning``)."""
        if any(w["stage"] == stage for w in self.warnings):  # a resumed run does not announce it twice
            return
        when = "after warm-up" if stage == "after_warmup" else "at the end of training"
        message = (f"the model has not learned the task {when}: " + "; ".join(reliability.reasons)
                   + f". Try: {reliability.advice}")
        warning = {"stage": stage, "message": message, "reliability": reliability.to_dict()}
        self.warnings.append(warning)
        self.callbacks.fire("on_warning", self.state, warning=warning)

    def _post_warmup(self, epoch: int) -> bool:
        return epoch >= self.clear.warmup_epochs

    def _run_epoch(self) -> None:
        e = self.state.epoch
        # Plain PEFT uses no p_clean while training: only the final pass runs for its report.
        needs_pass = (self.clear.routed and self._post_warmup(e)
                      and (e - self.clear.warmup_epochs) % self.clear.pass_every_epochs == 0)
        if needs_pass and (not self.estimator.epochs or self.estimator.epochs[-1] != e):
            _, held = self._clean_pass(e, routing=True)
            if self.estimator.summed == 1:  # the first pass after training began: has warm-up taught anything?
                check = self.estimator.learning_check(held)
                if not check.reliable:
                    self._warn("after_warmup", check)
        if needs_pass:  # from the estimator's state alone: a resumed run decides the same rows
            self.relabel.update(self.estimator)
        self.state.phase = "plain" if not self.clear.routed else ("routed" if self._post_warmup(e) else "warmup")
        self.callbacks.fire("on_epoch_begin", self.state)
        batches = self._batches(e)
        losses = self.state.epoch_losses
        while self.state.step_in_epoch < self.state.steps_per_epoch:
            idx = batches[self.state.step_in_epoch]
            losses.append(self._step(idx, e))
            self.state.step_in_epoch += 1
            self.state.global_step += 1
            control = self.callbacks.fire("on_step_end", self.state)
            if control.should_training_stop:
                raise TrainingCancelled(self.state)
            every = self.cfg.checkpoint_every_steps
            if (every and self.state.global_step % every == 0) or control.should_save:
                control.should_save = False
                if self.state.step_in_epoch < self.state.steps_per_epoch:
                    self._checkpoint()
        self._end_epoch(e, losses)

    def _batches(self, epoch: int) -> list[np.ndarray]:
        """Epoch ``epoch``'s training batches, a pure function of (rows, batch size, seed, epoch): a run resumed
        at step s of the epoch continues with batch s of the same list."""
        if self._epoch_batches is None or self._epoch_batches[0] != epoch:
            seed = epoch_seed(self.cfg.seed, epoch)
            if self.cfg.length_bucketing:
                batches = bucketed_batches(self.tokens.lengths, self.cfg.batch_size, seed=seed)
            else:
                batches = random_batches(len(self.train_idx), self.cfg.batch_size, seed=seed)
            self._epoch_batches = (epoch, batches)
        return self._epoch_batches[1]

    def _step(self, idx: np.ndarray, epoch: int) -> float:
        batch = self.tokens.batch(idx, self.device)
        y = torch.as_tensor(self.given[idx], device=self.device)
        post = self._post_warmup(epoch)
        p_clean = torch.as_tensor(self.estimator.p_clean[idx]) if post and self.clear.routed else None
        y, p_clean = self.relabel.batch(idx, y, p_clean)  # unchanged unless a relabelled row is in the batch
        self.router.route(p_clean, len(idx), self.device)
        with self._autocast():
            logits = self.model(batch).float()
        loss = F.cross_entropy(logits, y)
        weight = self._distill_weight(epoch)
        if self.clear.routed and post and weight > 0:
            t = self.clear.temperature
            teacher = torch.as_tensor(self.estimator.teacher[idx], device=self.device)
            soft = -(F.softmax(teacher / t, dim=1) * F.log_softmax(logits / t, dim=1)).sum(dim=1).mean()
            loss = loss + weight * (t * t) * soft
        loss.backward()
        if self.cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.loss = float(loss.detach())
        return self.state.loss

    def _distill_weight(self, epoch: int) -> float:
        ramp = self.clear.distill_ramp_epochs
        if ramp <= 0:
            return self.clear.distill_weight
        done = epoch - self.clear.warmup_epochs + 1
        return self.clear.distill_weight * min(1.0, done / ramp)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.autocast else contextlib.nullcontext()

    def _logits(self, batches: PassBatches | None, int8: bool = False) -> np.ndarray | None:
        if batches is None:
            return None
        return self.model.logits_for(batches, autocast=self.autocast, merge=self.cfg.merge_for_pass,
                                     int8=int8 and self.routing_int8)

    def _clean_pass(self, epoch: int, routing: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """One no-grad pass over the training and held-out rows, fed to the estimator; returns both logits. A
        ``routing`` pass (before a routed epoch) may run the training rows on an int8 copy (``routing_int8``);
        the held-out rows and the final pass never do."""
        logits, held = self._logits(self.train_pass, int8=routing), self._held_logits()
        self.estimator.update(logits, epoch, held)
        self.model.train()
        return logits, held

    def _held_logits(self) -> np.ndarray | None:
        """The held-out rows' logits at the current weights, computed once per optimizer step."""
        cached = self._held_cache
        if cached is not None and cached[0] == self.state.global_step:
            return cached[1]
        held = self._logits(self.held_pass)
        self._held_cache = None if held is None else (self.state.global_step, held)
        return held

    def _end_epoch(self, e: int, losses: list[float]) -> None:
        eval_logits, held_logits = self._logits(self.eval_pass), self._held_logits()
        self.model.train()
        metrics = epoch_metrics(
            e + 1, losses, phase=self.state.phase, eval_logits=eval_logits, eval_y=self.eval_y,
            estimator=self.estimator, gold=self.gold[self.train_idx] if self.gold is not None else None,
            held_logits=held_logits,
        )
        metrics.update(self.relabel.metrics(self.gold[self.train_idx] if self.gold is not None else None))
        if held_logits is not None and self.gold is not None:  # scoring only: gold never steers training
            right = held_logits.argmax(axis=1) == self.gold[self.held_idx]
            metrics["validation_gold_accuracy"] = float(np.mean(right))
        acc = metrics.get("eval_accuracy", metrics.get("validation_agreement"))
        if acc is not None and (self.state.best_metric is None or acc > self.state.best_metric):
            self.state.best_metric, self.state.best_epoch = acc, e + 1
            if self.cfg.keep == "best":
                self.best_weights = {k: v.clone() for k, v in self.model.trainable_state_dict().items()}
        self.state.log_history.append(metrics)
        self.state.epoch, self.state.step_in_epoch, self.state.epoch_losses = e + 1, 0, []
        control = self.callbacks.fire("on_evaluate", self.state, metrics=metrics, model=self.model)
        self._checkpoint()
        if control.should_training_stop and self.state.epoch < self.cfg.epochs:
            raise TrainingCancelled(self.state)

    def _report_metrics(self, report: NoiseReport) -> dict[str, Any]:
        """The report's own numbers (estimated noise, verdict) and, with gold labels, its grades."""
        summary = report.summary()
        out: dict[str, Any] = {"estimated_noise_rate": summary["estimated_noise_rate"],
                               "report_reliable": summary["reliability"]["reliable"],
                               "flagged_fraction": summary["flagged_fraction"]}
        if self.clear.routed:  # how the routing passes ran (training.pass_precision; the final pass: as training)
            out["routing_pass_precision"] = "int8" if self.routing_int8 else "bf16" if self.autocast else "fp32"
        if self.gold is None:
            return out
        from .metrics import classification_metrics, detection_metrics

        noisy = self.gold != report.given
        det = detection_metrics(noisy, report.flagged, 1.0 - report.label_quality)
        out.update({f"noise_{k}": v for k, v in det.items()})
        out["true_noise_rate"] = float(noisy.mean())
        train = np.array([s == "train" for s in report.split])
        k = len(self.names) + int(bool((self.gold == len(self.names)).any()))  # a gold class outside the map
        cls = classification_metrics(self.gold[train], report.predicted[train], num_classes=k)
        out["train_gold_accuracy"] = cls["accuracy"]
        return out

    # ---- checkpoints -----------------------------------------------------------------------
    def _checkpoint(self) -> None:
        if self.checkpoint_dir is None:
            return
        payload = {
            "format": 2,
            "clear": self.clear.to_dict(),
            "training": self.cfg.to_dict(),
            "label_names": self.names,
            "fingerprint": self.fingerprint,
            "trainable": {k: v.cpu() for k, v in self.model.trainable_state_dict().items()},
            "best_weights": {k: v.cpu() for k, v in self.best_weights.items()} if self.best_weights else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(self.gates_rng),
            "estimator": self.estimator.state_dict(),
            "warnings": list(self.warnings),
            "state": self.state,
        }
        path = write_checkpoint(self.checkpoint_dir, self.state.global_step, payload)
        self.callbacks.fire("on_save", self.state, checkpoint_path=path)

    def _resume(self, resume_from) -> None:
        path = Path(resume_from)
        if path.is_dir() and not path.name.startswith("checkpoint-"):
            found = latest_checkpoint(path)
            if found is None:
                return
            path = found
        ckpt = read_checkpoint(path)
        if ckpt["fingerprint"] != self.fingerprint or ckpt["label_names"] != self.names:
            raise ValueError(f"checkpoint {str(path)!r} belongs to a run on other data or labels; do not resume from it")
        # from_dict fills fields added since the checkpoint was written with their defaults
        if (ClearConfig.from_dict(ckpt["clear"]).to_dict() != self.clear.to_dict()
                or TrainingConfig.from_dict(ckpt["training"]).to_dict() != self.cfg.to_dict()):
            raise ValueError(f"checkpoint {str(path)!r} was written with other settings; resume with the same ones")
        self._load_weights(ckpt["trainable"])
        self.best_weights = ckpt["best_weights"]
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.estimator.load_state_dict(ckpt["estimator"])
        self.warnings = list(ckpt.get("warnings", []))
        self.state = ckpt["state"]
        set_rng_state(ckpt["rng"], self.gates_rng)

    def _load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        self._held_cache = None  # other weights: the cached held-out logits are stale
        named = dict(self.model.model.named_parameters())
        with torch.no_grad():
            for k, v in weights.items():
                named[k].copy_(v.to(named[k].device))
