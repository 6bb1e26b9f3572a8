"""Training cost of routing (issue 7, Sec. 3): throughput and memory of routed vs unrouted PEFT, and the clean pass.

For each method, in ONE process, the variants are trained step by step on the same batches,
alternating variant order every repeat: ``unrouted`` (clear_core, every gate 1), ``stock peft``
(LoRA only: peft with no gate hook), ``routed warm-up`` (gates ~ Bernoulli(c)), ``routed``
(gates ~ Bernoulli(c * p_clean) plus the soft-target term; p_clean drawn uniformly in
[0.3, 1]), and for LoRA / BitFit ``frozen copy`` (the reference implementation's design: a frozen
deep copy of every layer run beside the routed one, see bench/baselines.py). A step replicates
the trainer's (forward, CE [+ lambda * soft CE], backward, clipping, AdamW). Throughput is rows/s
from the median step time. Memory: on CUDA the peak allocated during a step above what was
resident before it (``torch.cuda.max_memory_allocated``); on CPU, where the process RSS
high-water mark cannot separate variants living in one process, the bytes of the distinct
tensors saved for backward in one step (``torch.autograd.graph.saved_tensors_hooks``, parameters
excluded), i.e. the activation memory. The clean-probability pass (``ClearModel.logits_for`` on
the rows plus the GMM fit) is timed against an epoch of routed steps on the same rows.

    python -m bench.cost --quick
    python -m bench.cost --methods lora --rows 4096 --steps 30 --repeats 5

``--suite training`` measures instead what issue 13's training changes pull and the demo's job end to end
(bench/cost_training.py; JSON ``bench/results/cost_training_<quick|full>.json``):

    python -m bench.cost --suite training --seeds 0,1,2 --lengths 48,128
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
import torch.nn.functional as F

from bench.baselines import frozen_copy_model, stock_lora
from bench.common import (add_common_args, csv_list, environment, fill_defaults, load_average, load_splits,
                          parse_overrides)
from bench.output import markdown_table, write_results
from clear_core import ClearConfig, ClearModel
from clear_core.data import TokenizedTexts
from clear_core.estimate import NoiseEstimator
from clear_core.routing import GateController, sample_gates
from clear_core.trainer import pick_device

QUICK = {"methods": "lora,adapter,prefix,bitfit", "rows": 128, "steps": 2, "repeats": 3, "max_length": 48,
         "batch_size": 32, "train_rows": 400, "test_rows": 50}
FULL = {"methods": "lora,adapter,prefix,bitfit", "rows": 2048, "steps": 20, "repeats": 5, "max_length": 64,
        "batch_size": 32, "train_rows": 0, "test_rows": 50}


@dataclass
class Variant:
    """One measured configuration: its model, optimizer and gate mode (unrouted, stock, warmup, routed, copy)."""

    name: str
    model: ClearModel
    mode: str
    mix: GateController | None = None
    optimizer: torch.optim.Optimizer | None = None


def build_parser() -> argparse.ArgumentParser:
    """The command line (see ``--help``)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--methods", help="methods, comma-separated")
    p.add_argument("--rows", type=int, help="rows of the clean-probability pass and of the 'epoch'")
    p.add_argument("--steps", type=int, help="timed steps per variant per repeat")
    p.add_argument("--repeats", type=int, help="alternating repeats")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    p.add_argument("--suite", choices=("steps", "training"), default="steps",
                   help="steps: routed vs unrouted step cost per method (default); training: issue 13's changes "
                        "(bucketing, merged and reused pass, cadence) and the demo's job before/after")
    p.add_argument("--seeds", default=None, help="training suite: seeds of the demo's job, comma-separated")
    p.add_argument("--lengths", default=None, help="training suite: max_length values of the components, "
                   "comma-separated")
    p.add_argument("--pass-batch-size", type=int, default=None, help="training suite: rows per pass batch")
    p.add_argument("--demo-variants", default=None,
                   help="training suite: which of before, 'after fp32', after, 'after fp32 exact-pass', "
                        "'after full-block', 'after pass-every-2', 'after unrouted' to train (default: the first five), "
                        "comma-separated")
    p.add_argument("--demo-epochs", type=int, default=None,
                   help="training suite: epochs of the demo's job (default 2, 1 of them warm-up); more than 2 "
                        "makes 'after pass-every-2' differ from 'after'")
    p.add_argument("--cadence-epochs", type=int, default=None,
                   help="training suite: epochs of one longer run measuring how far p_clean moves (0 = skip)")
    return p


def build_variants(method: str, args, names: list[str], device: torch.device) -> list[Variant]:
    """The variants of ``method``, each with its own identically seeded model and AdamW."""
    over = parse_overrides(args.clear)
    out = []

    def add(name, mode, make):
        torch.manual_seed(0)
        model, mix = make()
        model.to(device).train()
        params = [p for p in model.parameters() if p.requires_grad]
        out.append(Variant(name, model, mode, mix, torch.optim.AdamW(params, lr=args.learning_rate)))

    def ours(routed):
        return lambda: (ClearModel.build(args.model, ClearConfig(**{**over, "method": method, "routed": routed}),
                                         names, args.max_length), None)

    add("unrouted", "unrouted", ours(False))
    if method == "lora":
        add("stock peft", "stock", lambda: (stock_lora(args.model, names, args.max_length, over), None))
    routed = ours(True)
    add("routed", "routed", routed)
    out.append(Variant("routed warm-up", out[-1].model, "warmup", None, out[-1].optimizer))
    if method in ("lora", "bitfit"):
        add("frozen copy (reference)", "copy", lambda: frozen_copy_model(method, args.model, names,
                                                                          args.max_length, over))
    return out


def train_step(v: Variant, batch: dict, y: torch.Tensor, p: torch.Tensor, teacher: torch.Tensor,
               gen: torch.Generator, autocast: bool) -> None:
    """One optimizer step as the trainer takes it; gates and the soft-target term follow ``v.mode``."""
    cap, layers = v.model.clear_config.routing_cap, v.model.num_layers
    if v.mode in ("unrouted", "stock", "copy"):
        v.model.controller.set_constant(1.0)
    else:
        probs = p if v.mode == "routed" else torch.ones_like(p)
        gates = sample_gates(probs, routing_cap=cap, num_layers=layers, generator=gen)
        v.model.controller.set_gates(gates.to(y.device))
    if v.mode == "copy":
        v.mix.set_gates(sample_gates(p, routing_cap=cap, num_layers=layers, generator=gen).to(y.device))
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with ctx:
        logits = v.model(batch).float()
    loss = F.cross_entropy(logits, y)
    if v.mode in ("routed", "copy"):
        loss = loss - (F.softmax(teacher, dim=1) * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    loss.backward()
    params = [q for q in v.model.parameters() if q.requires_grad]
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    v.optimizer.step()
    v.optimizer.zero_grad(set_to_none=True)


def step_memory_mb(v: Variant, run_step, device: torch.device) -> float:
    """MB of one step: CUDA peak above resident, or on CPU the distinct non-parameter tensors saved for backward."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        run_step()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    params = {q.untyped_storage().data_ptr() for q in v.model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run_step()
    return sum(seen.values()) / 2**20


def _timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure_method(method: str, args, texts: list[str], y_all: np.ndarray, names: list[str],
                   device: torch.device) -> tuple[list[dict], list[dict]]:
    """Step rows (throughput, memory, ratios to unrouted) and clean-pass rows of one method."""
    variants = build_variants(method, args, names, device)
    tokens = TokenizedTexts(variants[0].model.tokenizer, texts, None, args.max_length)
    rng = np.random.default_rng(0)
    n, k, bsz = len(texts), len(names), args.batch_size
    batches = [rng.choice(n, size=min(bsz, n), replace=False) for _ in range(args.steps)]
    p_all = torch.as_tensor(rng.uniform(0.3, 1.0, n), dtype=torch.float32)
    teacher_all = torch.as_tensor(rng.normal(size=(n, k)), dtype=torch.float32)
    autocast = device.type == "cuda"
    gen = torch.Generator().manual_seed(0)
    steps = {v.name: [] for v in variants}
    memory, passes = {}, {v.name: [] for v in variants if v.mode in ("routed", "copy")}

    def step_fn(v, idx):
        y = torch.as_tensor(y_all[idx], device=device)
        teacher = teacher_all[idx].to(device)
        return lambda: train_step(v, tokens.batch(idx, device), y, p_all[idx], teacher, gen, autocast)

    for v in variants:  # warm-up step (allocates AdamW state), then one step's memory
        step_fn(v, batches[0])()
        memory[v.name] = step_memory_mb(v, step_fn(v, batches[0]), device)
    for r in range(args.repeats):
        for v in (variants if r % 2 == 0 else variants[::-1]):
            steps[v.name] += [_timed(step_fn(v, idx), device) for idx in batches]
            if v.name in passes:
                if v.mix is not None:  # the reference's pass runs both stacks at the uniform rate c
                    v.mix.set_constant(v.model.clear_config.routing_cap)
                tracker = NoiseEstimator(y_all, num_classes=int(y_all.max()) + 1)
                passes[v.name].append(_timed(lambda: tracker.update(
                    v.model.logits_for(tokens, batch_size=128, autocast=autocast), 0), device))
    base = float(np.median(steps["unrouted"]))
    step_rows = []
    for v in variants:
        t = float(np.median(steps[v.name]))
        trainable = sum(q.numel() for q in v.model.parameters() if q.requires_grad)
        storages = {q.untyped_storage().data_ptr(): q.untyped_storage().nbytes() for q in v.model.state_dict().values()}
        weights = sum(storages.values()) / 2**20  # shared tensors (peft's word_embeddings alias) once
        step_rows.append({"method": method, "variant": v.name, "step_s": t, "rows_per_s": bsz / t,
                          "step_ratio": t / base, "memory_mb": memory[v.name],
                          "memory_ratio": memory[v.name] / memory["unrouted"], "weights_mb": weights,
                          "trainable_params": trainable,
                          "step_times_s": steps[v.name]})
    epoch_steps = math.ceil(n / bsz)
    pass_rows = []
    for v in variants:
        if v.name not in passes:
            continue
        t_pass, t_step = float(np.median(passes[v.name])), float(np.median(steps[v.name]))
        epoch = epoch_steps * t_step
        pass_rows.append({"method": method, "variant": v.name, "rows": n, "pass_s": t_pass, "epoch_s": epoch,
                          "pass_over_epoch": t_pass / epoch,
                          "epoch_with_pass_ratio": (epoch + t_pass) / (epoch_steps * base),
                          "pass_times_s": passes[v.name]})
    del variants
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return step_rows, pass_rows


def steps_table(rows: list[dict], *, cuda: bool) -> str:
    """Throughput, step time and memory of each variant, with ratios to the unrouted one."""
    mem = "peak step MB (CUDA)" if cuda else "saved activations MB (CPU)"
    headers = ["method", "variant", "rows/s", "step ms", "step × unrouted", mem, "memory × unrouted", "weights MB",
               "trainable params"]
    return markdown_table(headers, [
        [r["method"], r["variant"], f"{r['rows_per_s']:.1f}", f"{1000 * r['step_s']:.0f}", f"{r['step_ratio']:.2f}",
         f"{r['memory_mb']:.1f}", f"{r['memory_ratio']:.2f}", f"{r['weights_mb']:.1f}", r["trainable_params"]]
        for r in rows])


def pass_table(rows: list[dict]) -> str:
    """The clean-probability pass against an epoch of routed steps on the same rows."""
    headers = ["method", "variant", "rows", "pass s", "epoch of steps s", "pass / epoch",
               "(epoch + pass) / unrouted epoch"]
    return markdown_table(headers, [
        [r["method"], r["variant"], r["rows"], f"{r['pass_s']:.2f}", f"{r['epoch_s']:.2f}",
         f"{r['pass_over_epoch']:.2f}", f"{r['epoch_with_pass_ratio']:.2f}"] for r in rows])


TRAINING_QUICK = {"rows": 200, "steps": 4, "repeats": 2, "seeds": "0", "lengths": "48", "pass_batch_size": 128,
                  "cadence_epochs": 0, "train_rows": 300, "test_rows": 100, "methods": "lora", "max_length": 48,
                  "batch_size": 16}
TRAINING_FULL = {"rows": 0, "steps": 0, "repeats": 3, "seeds": "0,1,2", "lengths": "48,128", "pass_batch_size": 128,
                 "cadence_epochs": 6, "train_rows": 0, "test_rows": 0, "methods": "lora", "max_length": 48,
                 "batch_size": 16}


def main_training(args) -> dict[str, Any]:
    """The training suite (bench/cost_training.py): print its tables, write its JSON; return the payload."""
    from bench.common import FALLBACK_TEST, FALLBACK_TRAIN
    from bench.cost_training import run_suite

    args.seeds = [int(s) for s in csv_list(args.seeds)] if args.seeds else []
    args.lengths = [int(s) for s in csv_list(args.lengths)] if args.lengths else []
    args.demo_variants = csv_list(args.demo_variants) if args.demo_variants else None
    env = environment()
    with tempfile.TemporaryDirectory(prefix="cost-training-") as folder:
        data = args.data
        if data is None:  # the demo's job: the shipped 2,000-row sample and its 1,000 test rows
            shutil.copy(FALLBACK_TRAIN, Path(folder) / "train.csv")
            shutil.copy(FALLBACK_TEST, Path(folder) / "test.csv")
            data = folder
        splits = load_splits(data, train_rows=args.train_rows, test_rows=args.test_rows,
                             heldout_frac=args.heldout_frac, data_seed=args.data_seed)
    def finish(payload: dict[str, Any]) -> dict[str, Any]:
        payload["environment"]["load_average_at_end"] = load_average()
        payload.update({"mode": "quick" if args.quick else "full", "settings": vars(args), "data": splits.source})
        return payload

    payload = run_suite(args, splits, env, lambda msg: print(msg, flush=True),
                        save=lambda p: write_results(finish(p), script="cost_training", quick=args.quick, out=args.out))
    finish(payload)
    print(f"\n## Training cost ({payload['mode']}; {env['torch_threads']} threads)\n")
    for name, table in payload["tables"].items():
        print(f"### {name}\n\n{table}\n")
    path = write_results(payload, script="cost_training", quick=args.quick, out=args.out)
    print(f"wrote {path} in {payload['wall_time_s']:.0f} s")
    return payload


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure every method, print the tables, write the JSON; return the payload."""
    args = build_parser().parse_args(argv)
    if args.suite == "training":
        return main_training(fill_defaults(args, TRAINING_QUICK, TRAINING_FULL))
    args = fill_defaults(args, QUICK, FULL)
    args.learning_rate = args.learning_rate or 1e-5
    device = pick_device(args.device)
    start, env = time.perf_counter(), environment()
    splits = load_splits(args.data, train_rows=args.train_rows, test_rows=args.test_rows,
                         heldout_frac=args.heldout_frac, data_seed=args.data_seed)
    pool = splits.pool.iloc[: args.rows]
    texts, y_all = pool["text"].tolist(), pool["label"].astype(int).to_numpy()
    step_rows, pass_rows = [], []
    for method in csv_list(args.methods):
        s, p = measure_method(method, args, texts, y_all, splits.label_names, device)
        step_rows += s
        pass_rows += p
        print(f"{method}: done ({time.perf_counter() - start:.0f} s)", flush=True)
    env["load_average_at_end"] = load_average()
    tables = {"steps": steps_table(step_rows, cuda=device.type == "cuda"), "clean_pass": pass_table(pass_rows)}
    mode = "quick" if args.quick else "full"
    print(f"\n## Cost ({mode}; {device.type}{' ' + env['gpu'] if env['gpu'] else ''}, {env['torch_threads']} threads; "
          f"batch {args.batch_size}, {args.max_length} tokens, {args.steps} steps x {args.repeats} repeats)\n")
    print(tables["steps"] + "\n\n" + tables["clean_pass"])
    memory = ("cuda_max_memory_allocated_above_resident" if device.type == "cuda"
              else "saved_tensors_for_backward_excluding_parameters")
    payload = {"script": "cost", "mode": mode, "settings": vars(args), "device": str(device), "memory_measure": memory,
               "data": splits.source, "environment": env, "steps": step_rows, "clean_pass": pass_rows,
               "tables": tables, "wall_time_s": time.perf_counter() - start}
    path = write_results(payload, script="cost", quick=args.quick, out=args.out)
    print(f"\nwrote {path} in {payload['wall_time_s']:.0f} s")
    return payload


if __name__ == "__main__":
    main()
