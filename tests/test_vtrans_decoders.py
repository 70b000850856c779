"""VTrans on decoder LMs, shape level: tiny random GPT-2 / LLaMA / Mistral / Qwen2 configs.

Masked (gated) vs materialized outputs for every structure, GQA group consistency, exact parameter counts,
save -> AutoModelForCausalLM round trips, generate() with the KV cache, and the uniform native export.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaModel,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

import hf_compress  # noqa: F401
from hf_compress.vtrans import (
    PrunedDecoderConfig,
    PrunedDecoderForCausalLM,
    UnsupportedModelError,
    attach_gates,
    count_params,
    dense_shape,
    get_adapter,
    get_gates,
    materialize,
    resolve_budget,
)
from hf_compress.vtrans.budget import expected_size, measure
from hf_compress.vtrans.checkpoint import PrunedCheckpointError

VOCAB = 100
DECODERS = ("llama", "mistral", "qwen2", "gpt2")


def tiny_decoder(kind: str, **overrides):
    torch.manual_seed(0)
    common = dict(vocab_size=VOCAB, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if kind == "gpt2":
        config = GPT2Config(n_embd=32, n_layer=3, n_head=4, n_positions=64, **common, **overrides)
        return GPT2LMHeadModel(config).eval()
    sizes = dict(hidden_size=48, intermediate_size=64, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2)
    sizes.update(overrides)
    if kind == "llama":
        return LlamaForCausalLM(LlamaConfig(**sizes, **common)).eval()
    if kind == "mistral":
        return MistralForCausalLM(MistralConfig(**sizes, **common, sliding_window=None)).eval()
    return Qwen2ForCausalLM(Qwen2Config(**sizes, **common)).eval()


def set_gates(model, group: str, seed: int = 0) -> None:
    """Random keep decisions and mu values in one gate group; every other unit kept with mu 1."""
    gates = get_gates(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        gate = gates.groups[group]
        gate.log_sigma2.copy_(torch.rand(gate.shape, generator=generator) * 6 - 3)
        if group != "hidden":  # decoders keep hidden mu at 1
            gate.mu.copy_(torch.rand(gate.shape, generator=generator) + 0.5)
        flat = gate.log_sigma2.view(-1)
        flat[0] = -5.0  # something always survives
        if group in ("mha", "ffn_layer"):
            gate.log_sigma2[1] = 5.0  # one whole sub-layer removed


def inputs(batch: int = 2, length: int = 9) -> torch.Tensor:
    return torch.randint(3, VOCAB, (batch, length), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("kind", DECODERS)
def test_dense_counts_are_exact(kind):
    model = tiny_decoder(kind)
    shape = dense_shape(model)
    assert count_params(shape)["total"] == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("kind", DECODERS)
def test_expected_size_starts_at_dense(kind):
    model = tiny_decoder(kind)
    gates = attach_gates(model, init_log_sigma2=-9.0)
    shape = dense_shape(model)
    for metric in ("layer_params", "total_params", "flops"):
        expected = float(expected_size(shape, gates, metric, 32))
        assert expected == pytest.approx(measure(shape, metric, 32), rel=1e-3)


def test_gqa_models_gate_kv_groups_and_mha_models_do_not():
    assert "kv_groups" in attach_gates(tiny_decoder("llama")).groups
    assert attach_gates(tiny_decoder("llama")).groups["kv_groups"].shape == (3, 2)
    assert "kv_groups" not in attach_gates(tiny_decoder("gpt2")).groups
    assert "kv_groups" not in attach_gates(tiny_decoder("llama", num_key_value_heads=6)).groups


@pytest.mark.parametrize("kind", DECODERS)
@pytest.mark.parametrize("group", ["heads", "kv_groups", "ffn", "mha", "ffn_layer", "hidden"])
def test_masked_equals_materialized(kind, group):
    model = tiny_decoder(kind)
    gates = attach_gates(model)
    if group not in gates.groups:
        pytest.skip(f"{kind} has no {group} gates (no grouped-query attention)")
    set_gates(model, group)
    x = inputs()
    with torch.no_grad():
        masked = model(x).logits
    pruned = materialize(model)
    assert isinstance(pruned, PrunedDecoderForCausalLM)
    assert count_params(dense_shape(model))["total"] > sum(p.numel() for p in pruned.parameters())
    with torch.no_grad():
        out = pruned(x).logits
    gap = (out - masked).abs().max().item()
    if kind == "gpt2" and group == "hidden":
        # LayerNorm over the kept dims re-centres with their own mean: close, not equal (measured ~0.1-0.3
        # on logits of scale ~1 with a random tiny model); every other structure is exact.
        assert gap < 1.0
        print(f"GPT-2 hidden-dim pruning, masked vs materialized max |logit gap| = {gap:.3g}")
    else:
        assert gap < 1e-4, gap


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_gqa_group_structure_survives(kind):
    model = tiny_decoder(kind)
    attach_gates(model)
    set_gates(model, "heads", seed=3)
    set_gates(model, "kv_groups", seed=4)
    x = inputs()
    with torch.no_grad():
        masked = model(x).logits
    pruned = materialize(model)
    report = pruned.config.pruning_report
    for heads, kv in zip(report["num_heads"], report["num_kv_heads"]):
        assert (heads == 0) == (kv == 0)
        assert kv <= 2 and heads <= 6
    # every kept query head reads the KV head of its own original group
    for i, head_index in enumerate(report["head_index"]):
        kv_map = pruned.config.kv_head_map_per_layer[i]
        groups = sorted({h // 3 for h in head_index})
        reads = kv_map if kv_map is not None else [
            j // (len(head_index) // max(len(groups), 1)) for j in range(len(head_index))
        ]
        assert [groups[r] for r in reads] == [h // 3 for h in head_index]
    with torch.no_grad():
        assert (pruned(x).logits - masked).abs().max() < 1e-4


@pytest.mark.parametrize("kind", DECODERS)
def test_budget_is_met_and_counts_match_numel(kind):
    model = tiny_decoder(kind)
    attach_gates(model)
    for group in get_gates(model).groups:
        set_gates(model, group)
    shape = dense_shape(model)
    for budget in (resolve_budget(shape, target_sparsity=0.5), resolve_budget(shape, target_flops=0.6 * measure(shape, "flops", 32), seq_len=32)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pruned = materialize(model, budget=budget)
        report = pruned.config.pruning_report
        assert report["budget"]["realised"] <= budget.target
        assert report["params_pruned"]["total"] == sum(p.numel() for p in pruned.parameters())


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_save_load_generate_with_cache(kind, tmp_path):
    model = tiny_decoder(kind)
    attach_gates(model)
    set_gates(model, "heads", seed=5)
    set_gates(model, "ffn", seed=6)
    with torch.no_grad():
        get_gates(model).groups["mha"].log_sigma2[0] = 5.0  # layer 0 loses its attention (no cache slot)
    x = inputs(2, 7)
    mask = torch.ones_like(x)
    with torch.no_grad():
        reference = model.generate(x, attention_mask=mask, max_new_tokens=8, do_sample=False)
    materialize(model).save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, PrunedDecoderForCausalLM)
    assert loaded.config.num_attention_heads_per_layer[0] == 0
    cached = loaded.generate(x, attention_mask=mask, max_new_tokens=8, do_sample=False)
    uncached = loaded.generate(x, attention_mask=mask, max_new_tokens=8, do_sample=False, use_cache=False)
    assert torch.equal(cached, reference)
    assert torch.equal(cached, uncached)
    # left padding: the padded row generates what it generates alone
    padded_mask = mask.clone()
    padded_mask[0, :3] = 0
    batch = loaded.generate(x, attention_mask=padded_mask, max_new_tokens=5, do_sample=False)
    alone = loaded.generate(x[:1, 3:], max_new_tokens=5, do_sample=False)
    assert torch.equal(batch[0, -5:], alone[0, -5:])


def test_pruned_decoder_takes_the_cache_under_either_name():
    """transformers >= 5.24 passes the KV cache as ``cache``, earlier 5.x as ``past_key_values``: a second step
    with either name continues the first one, and naming two different caches is an error."""
    from transformers import DynamicCache

    model = tiny_decoder("llama")
    attach_gates(model)
    set_gates(model, "heads", seed=5)
    pruned = materialize(model).eval()
    x = inputs(2, 7)
    with torch.no_grad():
        full = pruned(x).logits[:, -1]
        steps = {}
        for name in ("cache", "past_key_values"):
            cache = DynamicCache(config=pruned.config)
            pruned(x[:, :-1], use_cache=True, **{name: cache})
            steps[name] = pruned(x[:, -1:], use_cache=True, **{name: cache}).logits[:, -1]
    for name, logits in steps.items():
        assert torch.allclose(logits, full, atol=1e-5), name
    with pytest.raises(ValueError, match="Pass the KV cache once"):
        pruned(x, cache=DynamicCache(config=pruned.config), past_key_values=DynamicCache(config=pruned.config))


def test_tied_embeddings_stay_tied(tmp_path):
    model = tiny_decoder("llama", tie_word_embeddings=True)
    attach_gates(model)
    set_gates(model, "hidden")
    pruned = materialize(model)
    assert pruned.lm_head.weight is pruned.model.embed_tokens.weight
    pruned.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()


def test_uniform_llama_saves_native_config_loaded_without_plugin(tmp_path):
    model = tiny_decoder("llama")
    attach_gates(model)
    for group in get_gates(model).groups:
        set_gates(model, group)
    budget = resolve_budget(dense_shape(model), target_sparsity=0.4)
    pruned = materialize(model, budget=budget, uniform=True)
    assert type(pruned) is LlamaForCausalLM
    assert pruned.config.pruning_report["layer_sparsity"] >= 0.4
    assert pruned.config.hidden_size % pruned.config.num_attention_heads == 0
    x = inputs()
    with torch.no_grad():
        masked_from_plan = pruned(x).logits
    pruned.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "llama"
    script = (
        "import sys, torch, json\n"
        "assert 'hf_compress' not in sys.modules\n"
        "from transformers import AutoModelForCausalLM\n"
        f"m = AutoModelForCausalLM.from_pretrained({str(tmp_path)!r}).eval()\n"
        f"x = torch.tensor({x.tolist()})\n"
        "print(json.dumps(m(x).logits.tolist()))\n"
        "assert 'hf_compress' not in sys.modules\n"
    )
    env = dict(os.environ, PYTHONPATH="")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    logits = torch.tensor(json.loads(result.stdout.strip().splitlines()[-1]))
    assert torch.allclose(logits, masked_from_plan, atol=1e-5)


def test_uniform_matches_masked_model_with_same_decisions():
    """A uniform plan applied through the gates (mask = plan) and materialized give the same logits."""
    model = tiny_decoder("mistral")
    attach_gates(model)
    for group in get_gates(model).groups:
        set_gates(model, group)
    pruned = materialize(model, budget=resolve_budget(dense_shape(model), target_sparsity=0.5), uniform=True)
    assert type(pruned) is MistralForCausalLM
    shapes = {(pruned.config.num_attention_heads, pruned.config.num_key_value_heads, pruned.config.intermediate_size)}
    assert len(shapes) == 1 and pruned.config.num_key_value_heads >= 1


def test_base_decoder_model_materializes():
    model = LlamaModel(tiny_decoder("llama").config).eval()
    attach_gates(model)
    set_gates(model, "ffn")
    x = inputs()
    with torch.no_grad():
        masked = model(x).last_hidden_state
    pruned = materialize(model)
    with torch.no_grad():
        assert (pruned(x).last_hidden_state - masked).abs().max() < 1e-4


def test_unsupported_decoder_names_what_was_looked_for():
    from transformers import Qwen3Config, Qwen3ForCausalLM

    model = Qwen3ForCausalLM(Qwen3Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=2, head_dim=8))
    with pytest.raises(UnsupportedModelError, match=r"q_norm"):
        get_adapter(model)


def test_pruned_decoder_config_rejects_broken_groups():
    with pytest.raises(ValueError, match="whole multiple"):
        PrunedDecoderConfig(num_hidden_layers=1, num_attention_heads_per_layer=[3], num_key_value_heads_per_layer=[2],
                            intermediate_size_per_layer=[8], hidden_size=8, head_dim=4)
    with pytest.raises(ValueError, match="kv_head_map"):
        PrunedDecoderConfig(num_hidden_layers=1, num_attention_heads_per_layer=[3], num_key_value_heads_per_layer=[2],
                            kv_head_map_per_layer=[[0, 0, 0]], intermediate_size_per_layer=[8], hidden_size=8, head_dim=4)


def test_mismatched_checkpoint_is_refused(tmp_path):
    model = tiny_decoder("llama")
    attach_gates(model)
    set_gates(model, "ffn")
    materialize(model).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["intermediate_size_per_layer"] = [w + 8 for w in config["intermediate_size_per_layer"]]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(PrunedCheckpointError, match="config.json"):
        AutoModelForCausalLM.from_pretrained(tmp_path)


def test_pruning_a_pruned_decoder_is_refused():
    model = tiny_decoder("llama")
    attach_gates(model)
    pruned = materialize(model)
    with pytest.raises(UnsupportedModelError, match="already pruned"):
        attach_gates(pruned)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_magnitude_baseline_meets_budget(kind):
    from hf_compress.vtrans.baselines import magnitude_importance, prune_by_scores

    model = tiny_decoder(kind)
    scores = magnitude_importance(model)
    assert scores["heads"].shape == (3, 6 if kind == "llama" else 4)
    assert ("kv_groups" in scores) == (kind == "llama")
    budget = resolve_budget(dense_shape(model), target_sparsity=0.3)
    pruned = prune_by_scores(model, scores, budget)
    report = pruned.config.pruning_report
    assert report["method"] == "magnitude" and report["budget"]["realised"] <= budget.target
    assert report["params_pruned"]["total"] == sum(p.numel() for p in pruned.parameters())
    with torch.no_grad():
        assert torch.isfinite(pruned(inputs()).logits).all()
