"""The architecture matrix (issue 11): tiny config-built BERT, DistilBERT, RoBERTa, DeBERTa-v2 (v3-style
shared attention keys), ELECTRA, ModernBERT, Llama and Qwen2, each saved *without* its task head as a
pretrained checkpoint is, x {lora, adapter, prefix, bitfit} x {routed, plain}.

Each cell either trains and then passes: the parameters the checkpoint lacked are trained; a gate of 0 is
exactly the frozen backbone (with the trained head); inference is deterministic; save -> ``load_adapter``
(and stock peft for LoRA) reproduces the logits to 1e-5. Or it is refused with an error naming the methods
that fit. The README's support table is checked against what this matrix measured.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from clear_core import ClearConfig, ClearModel, TextClassificationData, TrainingConfig, load_adapter, train
from clear_core.architectures import UnsupportedMethod, method_support
from clear_core.data import TokenizedTexts
from clear_core.model import load_backbone
from clear_core.testing import ARCHITECTURES, build_tiny_backbone

from .conftest import TOPIC_WORDS, toy_texts

METHODS = ("lora", "adapter", "prefix", "bitfit")
NAMES = ["0", "1"]
PEFT_PARTS = ("lora_", "prompt_encoder", ".adapter.", "bias_delta")
README = Path(__file__).resolve().parents[1] / "README.md"
MEASURED: dict[tuple[str, str, bool], str] = {}


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    """Every tiny headless backbone, built once: ``{architecture: folder}``."""
    root = tmp_path_factory.mktemp("backbones")
    corpus = [" ".join(words) for words in TOPIC_WORDS.values()] * 4
    return {arch: build_tiny_backbone(root / arch, arch, corpus=corpus) for arch in ARCHITECTURES}


def _reference_state(model: ClearModel) -> dict[str, torch.Tensor]:
    """The trained model's weights under the plain classifier's names, without any PEFT parameter: the
    frozen backbone plus the trained head and untrained modules."""
    out = {}
    for key, value in model.model.state_dict().items():
        if any(part in key for part in PEFT_PARTS) or "original_module" in key:
            continue
        key = key.removeprefix("base_model.model.").removeprefix("base_model.")
        out[key.replace(".modules_to_save.default.", ".").replace(".base_layer.", ".")] = value
    return out


def _batch(model: ClearModel, n: int = 6) -> dict[str, torch.Tensor]:
    texts, _ = toy_texts(n, seed=3, words_per_text=5)
    texts[0] = texts[0] + " market market"  # rows of different lengths: padding is exercised
    return TokenizedTexts(model.tokenizer, texts, None, 16).batch(range(n))


@pytest.mark.parametrize("routed", [True, False], ids=["routed", "plain"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_the_matrix_cell_trains_gates_and_reloads_or_is_refused(backbones, tmp_path, arch, method, routed):
    folder = backbones[arch]
    support = method_support(folder)
    cfg = ClearConfig(method=method, routed=routed, warmup_epochs=1)
    if method in support["refused"]:
        with pytest.raises(UnsupportedMethod) as refused:
            ClearModel.build(folder, cfg, NAMES, 16)
        assert refused.value.supported == support["methods"] and method not in support["methods"]
        assert all(m in str(refused.value) for m in support["methods"])  # names the alternatives
        MEASURED[(arch, method, routed)] = "refused: " + support["refused"][method]
        return
    texts, labels = toy_texts(32, seed=1)
    result = train(TextClassificationData(texts, labels.tolist()), clear=cfg,
                   training=TrainingConfig(epochs=2, batch_size=8, learning_rate=3e-2, max_length=16, seed=0),
                   model_path=folder)
    model = result.model
    named = dict(model.model.named_parameters())
    peft_params = {n: p for n, p in named.items() if any(part in n for part in PEFT_PARTS)}
    assert peft_params and any(p.detach().abs().sum() > 0 for n, p in peft_params.items()
                               if "lora_B" in n or ".up." in n or "bias_delta" in n or "prompt" in n)
    for module in model.untrained:  # what the checkpoint lacked is trained (and so saved)
        owned = [p for n, p in named.items() if f".{module}." in f".{n}" and "original_module" not in n]
        assert owned and all(p.requires_grad for p in owned), module
    assert len(result.report) == 32 and np.isfinite(result.report.label_quality).all()

    batch = _batch(model)
    n, layers = batch["input_ids"].shape[0], model.num_layers
    model.eval()
    with torch.no_grad():
        model.controller.set_gates(torch.zeros(n, layers))
        off = model(batch)
        model.use_inference_gates()
    reference, _, _ = load_backbone(folder, NAMES)
    missing = reference.load_state_dict(_reference_state(model), strict=False).missing_keys
    assert not missing, missing
    reference.eval()
    inputs = {k: v for k, v in batch.items() if model.input_names is None or k in model.input_names}
    with torch.no_grad():
        frozen = reference(**inputs).logits
    torch.testing.assert_close(off, frozen, atol=1e-5, rtol=0)  # gate 0: exactly the frozen backbone

    first = model.predict_logits(texts)
    model.train()
    np.testing.assert_array_equal(model.predict_logits(texts), first)  # deterministic, dropout off
    one_by_one = np.concatenate([model.predict_logits(texts[i:i + 1]) for i in range(4)])
    np.testing.assert_allclose(one_by_one, first[:4], atol=1e-5, rtol=0)  # padding does not change a row
    saved = result.save(tmp_path / "adapter")
    reloaded = load_adapter(saved, model_path=folder)
    np.testing.assert_allclose(reloaded.predict_logits(texts), first, atol=1e-5, rtol=0)
    predicted = [NAMES[k] for k in first.argmax(axis=1)]
    assert reloaded.predict(texts) == predicted
    if method == "lora":
        from peft import PeftModel
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(saved)  # the saved tokenizer carries the pad token set
        base = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
        base.config.pad_token_id = tokenizer.pad_token_id
        stock = PeftModel.from_pretrained(base, str(saved)).eval()
        tokens = TokenizedTexts(tokenizer, texts, None, 16).batch(range(len(texts)))
        with torch.no_grad():
            logits = stock(**{k: v for k, v in tokens.items()
                              if model.input_names is None or k in model.input_names}).logits
        np.testing.assert_allclose(logits.numpy(), first, atol=1e-5, rtol=0)
    MEASURED[(arch, method, routed)] = "ok"


LABELS = {"bert": "BERT", "distilbert": "DistilBERT", "roberta": "RoBERTa", "deberta-v2": "DeBERTa-v2 / v3",
          "electra": "ELECTRA", "modernbert": "ModernBERT", "llama": "Llama", "qwen2": "Qwen2"}


def support_table(measured: dict[tuple[str, str, bool], str]) -> str:
    """The README's architecture x method table from the matrix's results (a cell is "ok" only if both its
    routed and plain runs passed)."""
    lines = ["| architecture | " + " | ".join(METHODS) + " |", "| --- |" + " --- |" * len(METHODS)]
    for arch in ARCHITECTURES:
        cells = []
        for method in METHODS:
            pair = {measured[(arch, method, r)] for r in (True, False)}
            cells.append("ok" if pair == {"ok"} else pair.pop().replace("|", "/") if len(pair) == 1 else "mixed")
        lines.append(f"| {LABELS[arch]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def test_the_readme_support_table_is_the_measured_one():
    if len(MEASURED) < len(ARCHITECTURES) * len(METHODS) * 2:
        pytest.skip("run the whole matrix to compare the README's table with it")
    table = support_table(MEASURED)
    (Path(__file__).parent / "artifacts").mkdir(exist_ok=True)
    (Path(__file__).parent / "artifacts" / "support_table.md").write_text(table + "\n")
    text = README.read_text()
    found = re.search(r"<!-- support-table -->\n(.*?)\n<!-- /support-table -->", text, re.S)
    assert found, "README.md lacks the <!-- support-table --> block"
    assert found.group(1).strip() == table, ("README's support table differs from the measured one; paste "
                                             "tests/artifacts/support_table.md")


def test_the_architectures_command_says_failure_in_its_exit_status(backbones, tmp_path, capsys):
    from clear_core.architectures import main

    assert main([str(backbones["bert"])]) == 0
    capsys.readouterr()
    assert main([str(backbones["bert"]), str(tmp_path / "missing")]) == 1  # described what it could
    described = json.loads(capsys.readouterr().out)
    assert described[str(backbones["bert"])]["architecture"] == "bert" and "error" in described[str(tmp_path / "missing")]
    assert main([]) == 2 and main(["--help"]) == 2 and "usage" in capsys.readouterr().err


@pytest.mark.parametrize("arch, good, bad", [
    ("bert", ["query", "attention.output.dense", "bert.encoder.layer.1.intermediate.dense"], ["classifier"]),
    ("llama", ["q_proj", "mlp.down_proj"], ["query"]),
])
def test_lora_target_modules_that_match_no_linear_of_the_blocks_are_refused_before_training(
        backbones, arch, good, bad):
    """The worker's check (the API makes the same one from the catalogue's ``lora_modules``)."""
    from clear_core.architectures import block_linears, check_method, skeleton

    model = skeleton(backbones[arch])
    assert method_support(backbones[arch])["lora_modules"] == block_linears(model)
    check_method(model, "lora", good)  # names, suffixes and qualified names as peft matches them
    with pytest.raises(UnsupportedMethod, match=rf"lora_target_modules \['{bad[0]}'\] match no linear layer"):
        check_method(model, "lora", good + bad)
    stack = method_support(backbones[arch])["layer_stack"]
    for wrong in (f"{stack}.99.{block_linears(model)[0]}", f"nonexistent.{block_linears(model)[0]}"):
        with pytest.raises(UnsupportedMethod, match="match no linear layer"):  # past the last block; no such path
            check_method(model, "lora", [wrong])


def test_a_short_name_wraps_only_the_blocks_layers(backbones):
    """``dense`` on BERT names the blocks' dense layers and the pooler's: LoRA wraps only the blocks' (the pooler
    would not be routed)."""
    from clear_core.architectures import lora_targets, skeleton

    targets = lora_targets(skeleton(backbones["bert"]), ["dense"])
    assert targets and all(t.startswith("bert.encoder.layer.") for t in targets)
    assert len(targets) == 3 * 2  # attention.output.dense, intermediate.dense, output.dense in each of 2 blocks
