"""Training cost on the demo's job (issue 13): what each change pulls, and the demo's training wall time.

``python -m bench.cost --suite training`` runs two parts in one process and writes
``bench/results/cost_training_<quick|full>.json``:

1. **Components** on the real model (all-MiniLM-L6-v2, routed LoRA) and the demo's rows, at each
   ``--lengths`` (48 = the demo's ``max_length``; 128 = the service's default, where rows differ more in
   length): an epoch of training steps with random vs length-bucketed batches (``clear_core.batching``),
   routed and unrouted, and the no-grad pass over the same rows unmerged/merged (``clear_core.merge``) and
   rebuilt/reused (``PassBatches``), and the bucketed epochs and the merged, reused pass again with the full
   last block (every other variant runs the default pooled-row last block, ``clear_core.pooled``). Variants
   alternate order every repeat; times are medians. From them:
   the routed epoch with its pass over an unrouted epoch, today (random batches, unmerged rebuilt pass) and
   now, and with a pass every second epoch (the cadence question).
2. **The demo's job end to end**: ``clear_core.train`` with the demo's settings (2,000 rows, 2 epochs with
   1 warm-up, LoRA, routed, batch 16, 48 tokens, learning rate 2e-3) with every change off ("before":
   ``length_bucketing``, ``merge_for_pass``, ``pooled_last_layer`` off, ``pass_cache_tokens=0``, fp32) and on
   ("after"), per seed, order
   alternating; training wall time (``TrainResult.wall_time_s``), test accuracy, and the noise report's
   precision / recall against the gold labels, mean ± std over seeds. With ``--cadence-epochs E`` it also
   trains one longer routed run and reports how far p_clean moves between consecutive passes.

    python -m bench.cost --suite training --quick
    python -m bench.cost --suite training --seeds 0,1,2 --lengths 48,128
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import numpy as np
import torch

from bench.cost import Variant, _timed, train_step
from bench.output import markdown_table, mean_std
from clear_core import ClearConfig, ClearModel, TextClassificationData, TrainerCallback, TrainingConfig, train
from clear_core.batching import PassBatches, bucketed_batches, padded_tokens, random_batches
from clear_core.data import TokenizedTexts
from clear_core.metrics import detection_metrics
from clear_core.model import cpu_has_native_bf16
from clear_core.pooled import pool_last_layer, unpool_last_layer

DEMO = dict(epochs=2, warmup_epochs=1, batch_size=16, max_length=48, learning_rate=2e-3)
# today's code path: random batches, unmerged passes padded anew each time, fp32 on the CPU
BEFORE = dict(length_bucketing=False, merge_for_pass=False, pass_cache_tokens=0, precision="fp32",
              pooled_last_layer=False)
# "after fp32" trains in fp32, so pass_precision='auto' runs its routing pass on an int8 copy (clear_core.int8), as on
# a CPU without native bf16; "after fp32 exact-pass" is the same without that copy: what it pulls, same results or not
VARIANTS = {"before": BEFORE, "after fp32": dict(precision="fp32"), "after": {},
            "after fp32 exact-pass": dict(precision="fp32", pass_precision="same"),
            "after full-block": dict(pooled_last_layer=False),  # the defaults but the full last block: same results?
            "after pass-every-2": {}, "after unrouted": {}}
# the cadence question end to end (--demo-epochs E > 2): the defaults with a routing pass every second routed epoch
# (ClearConfig.pass_every_epochs=2), and plain LoRA without routing, the denominator of "routed ÷ unrouted"
CLEAR_VARIANTS = {"after pass-every-2": dict(pass_every_epochs=2)}
UNROUTED_VARIANTS = frozenset({"after unrouted"})
DEFAULT_DEMO_VARIANTS = ("before", "after fp32", "after", "after fp32 exact-pass", "after full-block")


def lora_model(routed: bool, names: list[str], max_length: int, model_path) -> tuple[ClearModel, torch.optim.Optimizer]:
    """A LoRA ``ClearModel`` (seed 0) with a small random delta on its trained parameters (so a merged pass has
    a delta to fold), in training mode, and an AdamW over those parameters."""
    torch.manual_seed(0)
    model = ClearModel.build(model_path, ClearConfig(method="lora", routed=routed), names, max_length)
    with torch.no_grad():  # a trained-looking adapter, so the merged pass has a delta to fold
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.01)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    return model, torch.optim.AdamW(params, lr=1e-5)


def components(texts: list[str], y: np.ndarray, names: list[str], *, max_length: int, batch_size: int,
               steps: int, repeats: int, pass_batch_size: int, model_path) -> dict[str, Any]:
    """Median times of an epoch of steps (random / bucketed, routed / unrouted) and of the pass variants."""
    routed, routed_opt = lora_model(True, names, max_length, model_path)
    plain, plain_opt = lora_model(False, names, max_length, model_path)
    tokens = TokenizedTexts(routed.tokenizer, texts, None, max_length)
    n = len(texts)
    orders = {"random": random_batches(n, batch_size, seed=1), "bucketed": bucketed_batches(tokens.lengths,
                                                                                           batch_size, seed=1)}
    epoch_steps = len(orders["random"])
    take = epoch_steps if steps <= 0 else min(steps, epoch_steps)
    picks = np.linspace(0, epoch_steps - 1, take).round().astype(int)  # an even sample of the epoch's batches
    rng = np.random.default_rng(0)
    p_all = torch.as_tensor(rng.uniform(0.3, 1.0, n), dtype=torch.float32)
    teacher_all = torch.as_tensor(rng.normal(size=(n, len(names))), dtype=torch.float32)
    y_t = torch.as_tensor(y)
    gen = torch.Generator().manual_seed(0)
    variants = {"routed": Variant("routed", routed, "routed", None, routed_opt),
                "unrouted": Variant("unrouted", plain, "unrouted", None, plain_opt)}
    cpu = torch.device("cpu")
    bf16 = cpu_has_native_bf16()  # then also the defaults' bf16 autocast, as precision='auto' runs here
    epoch_times: dict[str, list[float]] = {f"{v} {o}": [] for v in variants for o in orders}
    if bf16:
        epoch_times.update({f"{v} bucketed-bf16": [] for v in variants})
    # the same with the full last block (clear_core.pooled off): what the pooled-row block pulls on its own
    epoch_times.update({f"{v} bucketed-fullblock": [] for v in variants})
    if bf16:
        epoch_times.update({f"{v} bucketed-bf16-fullblock": [] for v in variants})
    passes = {"today (unmerged, rebuilt)": dict(merge=False, cache=0),
              "merged, rebuilt": dict(merge=True, cache=0),
              "unmerged, reused": dict(merge=False, cache=10**10),
              "now (merged, reused)": dict(merge=True, cache=10**10)}
    if bf16:
        passes["now, bf16"] = dict(merge=True, cache=10**10, bf16=True)
    passes["now, full block"] = dict(merge=True, cache=10**10, full_block=True)
    if bf16:
        passes["now, bf16, full block"] = dict(merge=True, cache=10**10, bf16=True, full_block=True)
    passes["now, int8"] = dict(merge=True, cache=10**10, int8=True)  # pass_precision='auto' where training is fp32
    pass_batches = {name: PassBatches(tokens, pass_batch_size, max_cached_tokens=cfg["cache"])
                    for name, cfg in passes.items()}
    for pb in pass_batches.values():  # the reused variants pad once, before timing (as the trainer's 2nd+ pass)
        routed.logits_for(pb, merge=False)
    pass_times: dict[str, list[float]] = {name: [] for name in passes}
    for v in variants.values():  # allocate AdamW state
        idx = orders["random"][0]
        train_step(v, tokens.batch(idx), y_t[idx], p_all[idx], teacher_all[idx], gen, False)
    for r in range(repeats):
        keys = list(epoch_times) if r % 2 == 0 else list(epoch_times)[::-1]
        for key in keys:
            vname, oname = key.split(" ")
            v, batches = variants[vname], orders[oname.split("-")[0]]

            def run_epoch():
                with _cpu_autocast("-bf16" in oname), _full_block(v.model, "-fullblock" in oname):
                    for s in picks:
                        idx = batches[s]
                        train_step(v, tokens.batch(idx), y_t[idx], p_all[idx], teacher_all[idx], gen, False)

            epoch_times[key].append(_timed(run_epoch, cpu) * epoch_steps / take)
        for name in (list(passes) if r % 2 == 0 else list(passes)[::-1]):
            cfg = passes[name]
            with _full_block(routed, cfg.get("full_block", False)):
                pass_times[name].append(_timed(lambda: routed.logits_for(pass_batches[name], merge=cfg["merge"],
                                                                         autocast=cfg.get("bf16", False),
                                                                         int8=cfg.get("int8", False)), cpu))
        routed.train()
    med = {k: float(np.median(v)) for k, v in {**epoch_times, **pass_times}.items()}
    today = med["today (unmerged, rebuilt)"]
    now = med["now (merged, reused)"]
    ratios = {
        # routed epoch + its pass, over an unrouted epoch: random batches + unmerged rebuilt pass (today) ...
        "today":
            (med["routed random"] + today) / med["unrouted random"],
        # ... bucketed batches + merged reused pass (now, fp32), and the same with a pass every 2nd epoch
        "now":
            (med["routed bucketed"] + now) / med["unrouted bucketed"],
        "now, pass every 2nd epoch": (med["routed bucketed"] + now / 2) / med["unrouted bucketed"],
    }
    ratios["now, full last block"] = (
        (med["routed bucketed-fullblock"] + med["now, full block"]) / med["unrouted bucketed-fullblock"])
    if bf16:
        ratios["now, CPU bf16 (precision='auto' here)"] = (
            (med["routed bucketed-bf16"] + med["now, bf16"]) / med["unrouted bucketed-bf16"])
        ratios["now, CPU bf16, full last block"] = (
            (med["routed bucketed-bf16-fullblock"] + med["now, bf16, full block"]) / med["unrouted bucketed-bf16-fullblock"])
    # fp32 training (a CPU without native bf16): pass_precision='auto' runs the routing pass on an int8 copy
    ratios["now fp32, int8 routing pass (pass_precision='auto' without bf16)"] = (
        (med["routed bucketed"] + med["now, int8"]) / med["unrouted bucketed"])
    return {"max_length": max_length, "rows": n, "batch_size": batch_size, "epoch_steps": epoch_steps,
            "steps_timed_per_epoch": int(take), "pass_batch_size": pass_batch_size,
            "padding": {o: padded_tokens(tokens.lengths, b) / int(tokens.lengths.sum()) for o, b in orders.items()},
            "median_s": med, "times_s": {**epoch_times, **pass_times}, "ratios": ratios,
            "pulls": {
                "bucketing (routed epoch, random / bucketed)": med["routed random"] / med["routed bucketed"],
                "merge (pass, unmerged / merged, rebuilt)": med["today (unmerged, rebuilt)"] / med["merged, rebuilt"],
                "reuse (pass, rebuilt / reused, unmerged)": med["today (unmerged, rebuilt)"] / med["unmerged, reused"],
                "pass now vs today (today / now)": today / now,
                **({"CPU bf16 autocast (routed bucketed epoch, fp32 / bf16)":
                    med["routed bucketed"] / med["routed bucketed-bf16"],
                    "CPU bf16 autocast (pass, fp32 / bf16)": now / med["now, bf16"]} if bf16 else {}),
                "int8 routing pass (pass, fp32 merged reused / int8)": now / med["now, int8"],
                "pooled last block (routed bucketed epoch, full / pooled)":
                    med["routed bucketed-fullblock"] / med["routed bucketed"],
                "pooled last block (unrouted bucketed epoch, full / pooled)":
                    med["unrouted bucketed-fullblock"] / med["unrouted bucketed"],
                "pooled last block (pass, full / pooled)": med["now, full block"] / now,
                **({"pooled last block, bf16 (routed bucketed epoch, full / pooled)":
                    med["routed bucketed-bf16-fullblock"] / med["routed bucketed-bf16"],
                    "pooled last block, bf16 (pass, full / pooled)": med["now, bf16, full block"] / med["now, bf16"]}
                   if bf16 else {}),
                "cadence: pass every 2nd epoch (epoch+pass ratio, every / every 2nd)":
                    ratios["now"] / ratios["now, pass every 2nd epoch"],
            }}


def _cpu_autocast(on: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if on else contextlib.nullcontext()


@contextlib.contextmanager
def _full_block(model: ClearModel, on: bool):
    """Within it, ``model``'s last block computes every row (``clear_core.pooled`` undone), when ``on``."""
    if not on:
        yield
        return
    unpool_last_layer(model.model)
    try:
        yield
    finally:
        pool_last_layer(model.model)


class _Clock(TrainerCallback):
    """Timestamps of epoch begins, last steps and evaluations, to split a run's time into steps and passes."""

    def __init__(self) -> None:
        self.marks: list[tuple[str, int, float]] = []

    def on_epoch_begin(self, state, control):
        self.marks.append(("begin", state.epoch, time.perf_counter()))

    def on_evaluate(self, state, control, **_):
        self.marks.append(("evaluate", state.epoch, time.perf_counter()))


def demo_run(train_data, test_data, gold_noisy: np.ndarray, *, seed: int, variant: str, model_path,
             epochs: int, routed: bool = True) -> dict[str, Any]:
    """One training of the demo's job; its wall time, accuracy on the test rows and report scores. ``variant``
    names its TrainingConfig changes (``VARIANTS``), ClearConfig changes (``CLEAR_VARIANTS``) and whether it
    is routed (not when in ``UNROUTED_VARIANTS``)."""
    extra = VARIANTS[variant]
    routed = routed and variant not in UNROUTED_VARIANTS
    training = TrainingConfig(epochs=epochs, batch_size=DEMO["batch_size"], max_length=DEMO["max_length"],
                              learning_rate=DEMO["learning_rate"], seed=seed, **extra)
    clock = _Clock()
    clear = ClearConfig(method="lora", routed=routed, warmup_epochs=DEMO["warmup_epochs"],
                        **CLEAR_VARIANTS.get(variant, {}))
    result = train(train_data, clear=clear,
                   training=training, model_path=model_path, callbacks=[clock])
    logits = result.model.predict_logits(list(test_data.texts), batch_size=128)
    accuracy = float(np.mean(np.array(result.label_names)[logits.argmax(axis=1)] == np.array(test_data.labels)))
    det = detection_metrics(gold_noisy, result.report.flagged, 1.0 - result.report.label_quality)
    history = result.dynamics.p_clean_history
    moves = [float(np.mean(np.abs(b - a))) for a, b in zip(history, history[1:])]
    flips = [float(np.mean((a >= 0.5) != (b >= 0.5))) for a, b in zip(history, history[1:])]
    return {"seed": seed, "variant": variant, "routed": routed, "epochs": epochs,
            "train_wall_s": result.wall_time_s, "test_accuracy": accuracy,
            "precision": det.get("precision"), "recall": det.get("recall"), "flagged": int(result.report.flagged.sum()),
            "marks": clock.marks, "p_clean_mean_abs_change": moves, "p_clean_half_flips": flips}


def demo(seeds: list[int], train_data, test_data, gold_noisy, model_path, log, *, runs: list | None = None,
         after_each=None, variants: list[str] | None = None, epochs: int | None = None) -> list[dict[str, Any]]:
    """Every variant of the demo's job per seed (before, after with fp32, after with the defaults), the order
    reversed every other seed; each run is appended to ``runs`` and ``after_each()`` called."""
    runs = [] if runs is None else runs
    unknown = sorted(set(variants or ()) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown demo variant(s) {unknown}: choose among {list(VARIANTS)}")
    names = [v for v in VARIANTS if v in (variants or DEFAULT_DEMO_VARIANTS)]
    for i, seed in enumerate(seeds):
        for variant in (names if i % 2 == 0 else names[::-1]):
            run = demo_run(train_data, test_data, gold_noisy, seed=seed, variant=variant, model_path=model_path,
                           epochs=epochs or DEMO["epochs"])
            runs.append(run)
            log(f"demo seed {seed} {variant}: {run['train_wall_s']:.1f} s, accuracy {run['test_accuracy']:.3f}, "
                f"precision {run['precision']:.3f}, recall {run['recall']:.3f}")
            if after_each is not None:
                after_each()
    return runs


def tables(parts: list[dict], runs: list[dict], cadence: dict | None) -> dict[str, str]:
    """Markdown tables of the components, the demo's job and the cadence evidence."""
    out = {}
    rows = []
    for c in parts:
        m = c["median_s"]
        rows.append([c["max_length"], f"{c['padding']['random']:.2f} / {c['padding']['bucketed']:.2f}",
                     f"{m['routed random']:.1f} / {m['routed bucketed']:.1f}",
                     f"{m['unrouted random']:.1f} / {m['unrouted bucketed']:.1f}",
                     f"{m['today (unmerged, rebuilt)']:.2f} / {m['merged, rebuilt']:.2f} / "
                     f"{m['unmerged, reused']:.2f} / {m['now (merged, reused)']:.2f}",
                     " / ".join(f"{v:.2f}" for v in c["ratios"].values())])
    ratio_names = list(parts[0]["ratios"]) if parts else []
    out["components"] = markdown_table(
        ["max_length", "padded/real tokens random / bucketed", "routed epoch s random / bucketed",
         "unrouted epoch s random / bucketed", "pass s today / merged / reused / both",
         "epoch+pass ÷ unrouted epoch: " + " / ".join(ratio_names)], rows)
    pulls = []
    for c in parts:
        pulls += [[c["max_length"], k, f"{v:.2f}×"] for k, v in c["pulls"].items()]
    out["pulls"] = markdown_table(["max_length", "change", "speed-up"], pulls)
    by = {v: [r for r in runs if r["variant"] == v] for v in VARIANTS}
    def per_seed(v, base):  # wall time of variant v ÷ that of the base runs, seed by seed
        return [a["train_wall_s"] / b["train_wall_s"] for a in by[v] for b in base if a["seed"] == b["seed"]]

    if by["before"]:
        out["demo"] = markdown_table(
            ["variant", "training wall s", "test accuracy", "report precision", "report recall", "÷ before (per seed)"],
            [[v, mean_std([r["train_wall_s"] for r in rs], 1), mean_std([r["test_accuracy"] for r in rs]),
              mean_std([r["precision"] for r in rs]), mean_std([r["recall"] for r in rs]),
              mean_std(per_seed(v, by["before"]), 2) if v != "before" else ""] for v, rs in by.items() if rs])
    if any(by[v] for v in UNROUTED_VARIANTS):  # routed ÷ unrouted, per seed, on the same data and epochs
        plain = [r for v in UNROUTED_VARIANTS for r in by[v]]
        out["demo_vs_unrouted"] = markdown_table(
            ["variant", "epochs", "training wall s", "test accuracy", "report precision", "report recall",
             "÷ unrouted (per seed)"],
            [[v, rs[0]["epochs"], mean_std([r["train_wall_s"] for r in rs], 1),
              mean_std([r["test_accuracy"] for r in rs]), mean_std([r["precision"] for r in rs]),
              mean_std([r["recall"] for r in rs]), mean_std(per_seed(v, plain), 3)]
             for v, rs in by.items() if rs])
    if cadence:
        out["cadence"] = markdown_table(
            ["pass → next pass", "mean |Δ p_clean|", "rows crossing 0.5"],
            [[f"{i + 1} → {i + 2}", f"{m:.3f}", f"{f:.3f}"]
             for i, (m, f) in enumerate(zip(cadence["p_clean_mean_abs_change"], cadence["p_clean_half_flips"]))])
    return out


def run_suite(args, splits, env, log, save=None) -> dict[str, Any]:
    """Both parts (see the module docstring); returns the JSON payload. ``save(payload)``, if given, is called
    after every component and every demo run with what has been measured so far (a long run that is cut
    short keeps its finished parts)."""
    start = time.perf_counter()
    parts: list[dict] = []
    runs: list[dict] = []
    cadence: dict | None = None

    def payload() -> dict[str, Any]:
        return {"script": "cost_training", "components": parts, "demo_runs": runs, "cadence_run": cadence,
                "tables": tables(parts, runs, cadence), "environment": env,
                "wall_time_s": time.perf_counter() - start}

    def checkpoint() -> None:
        if save is not None:
            save(payload())

    pool = splits.pool.reset_index(drop=True)
    names = list(splits.label_names)
    rows = args.rows if args.rows else len(pool)
    sub = pool.iloc[:rows]
    texts, y = sub["text"].tolist(), sub["label"].astype(int).to_numpy()
    for length in args.lengths:
        log(f"components at max_length {length} ...")
        parts.append(components(texts, y, names, max_length=length, batch_size=DEMO["batch_size"], steps=args.steps,
                                repeats=args.repeats, pass_batch_size=args.pass_batch_size, model_path=args.model))
        log(f"  ratios {parts[-1]['ratios']}")
        checkpoint()
    train_data = TextClassificationData(pool["text"].tolist(), pool["label"].astype(str).tolist(),
                                        gold_labels=pool["gt"].astype(str).tolist())
    test = splits.test
    test_data = TextClassificationData(test["text"].tolist(), test["gt"].astype(str).tolist())  # scored on true labels
    gold_noisy = (pool["label"].astype(int) != pool["gt"].astype(int)).to_numpy()
    if args.seeds:
        demo(args.seeds, train_data, test_data, gold_noisy, args.model, log, runs=runs, after_each=checkpoint,
             variants=args.demo_variants, epochs=args.demo_epochs)
    if args.cadence_epochs:
        log(f"cadence run: {args.cadence_epochs} epochs ...")
        cadence = demo_run(train_data, test_data, gold_noisy, seed=args.seeds[0] if args.seeds else 0,
                           variant="after", model_path=args.model, epochs=args.cadence_epochs)
    return payload()

