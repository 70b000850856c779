"""VTransTrainer on tiny random models: phases, variants, logging, optimizer groups, resume, errors."""

from __future__ import annotations

import json
import os

import datasets
import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    Trainer,
    TrainingArguments,
)

import hf_compress  # noqa: F401
from hf_compress.vtrans import get_gates
from trainers import VTransTrainer, VTransTrainingArguments


def tiny_bert(num_labels: int = 2, seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
        num_labels=num_labels, max_position_embeddings=64,
    )
    return BertForSequenceClassification(config)


def copy_of(model):
    clone = type(model)(model.config)
    clone.load_state_dict(model.state_dict())
    return clone


def toy_dataset(n: int = 96, length: int = 10, seed: int = 0) -> datasets.Dataset:
    """Label = whether token 1 is in the upper half of the vocabulary (learnable by a tiny model)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, 100, (n, length), generator=g)
    return datasets.Dataset.from_dict(
        {"input_ids": ids.tolist(), "attention_mask": [[1] * length] * n, "labels": (ids[:, 1] >= 50).long().tolist()}
    )


def make_args(tmp_path, **overrides) -> VTransTrainingArguments:
    options = dict(
        output_dir=str(tmp_path / "out"), target_sparsity=0.5, per_device_train_batch_size=16, num_train_epochs=2,
        logging_steps=2, save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, finetune_epochs=1,
        data_fraction=1.0, seed=0,
    )
    options.update(overrides)
    return VTransTrainingArguments(**options)


@pytest.mark.parametrize("variant", ["vtrans", "fast", "faster"])
def test_train_prunes_to_budget_and_saves_loadable_model(tmp_path, variant):
    teacher = tiny_bert()
    student = copy_of(teacher)
    frozen_before = student.bert.encoder.layer[0].attention.self.query.weight.detach().clone()
    args = make_args(tmp_path, variant=variant, data_fraction=0.5 if variant != "vtrans" else 1.0)
    trainer = VTransTrainer(model=student, teacher_model=teacher, args=args, train_dataset=toy_dataset(), eval_dataset=toy_dataset(32, seed=1))
    if variant != "vtrans":
        assert len(trainer.train_dataset) == 48  # data fraction applied
    trainer.train()
    pruned = trainer.materialize()
    report = pruned.config.pruning_report
    assert report["budget"]["realised"] <= report["budget"]["target"]
    assert report["layer_sparsity"] >= 0.5
    assert report["variant"] == variant and report["compression_seconds"] > 0
    # the encoder defaults: sub-layer gates, and no hidden-dimension gates, only when the weights are frozen
    expected = ["heads", "ffn", "mha", "ffn_layer"] if variant == "faster" else ["hidden", "heads", "ffn"]
    assert report["gate_groups"] == expected
    # the pruned model really is smaller, and loads back with the Auto class
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in teacher.parameters())
    assert os.path.isfile(tmp_path / "out" / "model.safetensors")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out").eval()
    batch = toy_dataset(4, seed=2)[:]
    inputs = {"input_ids": torch.tensor(batch["input_ids"]), "attention_mask": torch.tensor(batch["attention_mask"])}
    pruned.eval()
    torch.testing.assert_close(reloaded(**inputs).logits, pruned(**inputs).logits)
    weight_after = trainer.model.bert.encoder.layer[0].attention.self.query.weight.detach()
    if variant == "faster":  # only gates train in the pruning phase
        torch.testing.assert_close(weight_after, frozen_before)
    else:
        assert not torch.equal(weight_after, frozen_before)


def test_finetune_phase_takes_its_own_batch_size(tmp_path):
    """The gate phase at a large batch (few steps), the fine-tune at a smaller one."""
    teacher = tiny_bert()
    args = make_args(tmp_path, variant="faster", per_device_train_batch_size=32, finetune_batch_size=8,
                     num_train_epochs=1, finetune_epochs=1)
    trainer = VTransTrainer(model=copy_of(teacher), teacher_model=teacher, args=args, train_dataset=toy_dataset())
    trainer.train()
    assert trainer.state.global_step == 96 // 32
    assert trainer.finetune_trainer.args.per_device_train_batch_size == 8
    assert trainer.finetune_trainer.state.global_step == 96 // 8
    with pytest.raises(ValueError, match="finetune_batch_size"):
        make_args(tmp_path, finetune_batch_size=0)


def test_finetune_phase_takes_its_own_data_fraction(tmp_path):
    """Faster gates from a quarter of the data, the fine-tune on three quarters that contain that quarter."""
    teacher = tiny_bert()
    data = toy_dataset()
    data = data.add_column("row", list(range(len(data))))
    args = make_args(tmp_path, variant="faster", data_fraction=0.25, finetune_data_fraction=0.75,
                     per_device_train_batch_size=8, num_train_epochs=1, finetune_epochs=1, remove_unused_columns=True)
    trainer = VTransTrainer(model=copy_of(teacher), teacher_model=teacher, args=args, train_dataset=data)
    trainer.train()
    gate_rows = set(trainer.train_dataset["row"])
    finetune_rows = set(trainer.finetune_trainer.train_dataset["row"])
    assert len(gate_rows) == 24 and len(finetune_rows) == 72 and gate_rows < finetune_rows
    assert trainer.state.global_step == 24 // 8 and trainer.finetune_trainer.state.global_step == 72 // 8
    with pytest.raises(ValueError, match="finetune_data_fraction"):
        make_args(tmp_path, finetune_data_fraction=1.5)


def test_faster_default_slices_are_a_small_gate_slice_inside_a_larger_finetune_slice(tmp_path):
    """Faster learns its gates from 2.5% and recovers on at least 12%; a slice the user states is kept as stated."""
    def fractions(**kwargs):
        args = make_args(tmp_path, **{"data_fraction": None, **kwargs})
        return args.effective_data_fraction, args.effective_finetune_data_fraction

    assert fractions(variant="faster") == (0.025, 0.12)
    assert fractions(variant="faster", data_fraction=0.5) == (0.5, 0.5)
    assert fractions(variant="faster", finetune_data_fraction=0.05) == (0.025, 0.05)
    assert fractions(variant="fast") == (0.03, 0.03)
    assert fractions(variant="vtrans") == (1.0, 1.0)
    teacher = tiny_bert()
    data = toy_dataset(n=400)
    data = data.add_column("row", list(range(len(data))))
    trainer = VTransTrainer(model=copy_of(teacher), teacher_model=teacher, args=make_args(
        tmp_path, variant="faster", data_fraction=None, remove_unused_columns=True), train_dataset=data)
    gate_rows, finetune_rows = set(trainer.train_dataset["row"]), set(trainer._finetune_dataset["row"])
    assert len(gate_rows) == round(0.025 * len(data)) and len(finetune_rows) == round(0.12 * len(data))
    assert gate_rows < finetune_rows


def test_faster_finetunes_at_a_larger_learning_rate_by_default(tmp_path):
    """Faster's weights train only in its short fine-tune, so it defaults to 6 x learning_rate there; the other
    variants fine-tune at learning_rate, and a stated finetune_learning_rate always wins. The fine-tune's
    optimizer really runs at that rate, and the pruning report records it."""
    def rate(**kwargs):
        return make_args(tmp_path, learning_rate=5e-5, **kwargs).effective_finetune_learning_rate

    assert rate(variant="faster") == pytest.approx(3e-4)
    assert rate(variant="fast") == rate(variant="vtrans") == pytest.approx(5e-5)
    assert rate(variant="faster", finetune_learning_rate=1e-5) == pytest.approx(1e-5)
    args = make_args(tmp_path, variant="faster", learning_rate=5e-5, num_train_epochs=1, finetune_epochs=1,
                     lr_scheduler_type="constant")
    trainer = VTransTrainer(model=tiny_bert(), teacher_model=tiny_bert(), args=args, train_dataset=toy_dataset(n=32))
    trainer.train()
    assert [g["lr"] for g in trainer.finetune_trainer.optimizer.param_groups] == pytest.approx([3e-4, 3e-4])
    assert trainer.pruned_model.config.pruning_report["finetune_learning_rate"] == pytest.approx(3e-4)


def test_every_loss_term_and_gate_state_is_logged(tmp_path):
    teacher = tiny_bert()
    trainer = VTransTrainer(model=copy_of(teacher), teacher_model=teacher, args=make_args(tmp_path, finetune_epochs=0), train_dataset=toy_dataset())
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss_kl" in h]
    assert logged, trainer.state.log_history
    for key in ("loss_task", "loss_distill_logits", "loss_distill_hidden", "loss_kl", "loss_lagrangian",
                "expected_size_ratio", "target_size_ratio", "realised_size_ratio", "lambda_1", "lambda_2"):
        assert key in logged[-1], key
    # target warms up from dense towards the budget
    assert logged[0]["target_size_ratio"] > logged[-1]["target_size_ratio"] == pytest.approx(0.5)


def test_optimizer_groups_and_lagrangian_ascent(tmp_path):
    teacher = tiny_bert()
    args = make_args(tmp_path, gate_learning_rate=0.07, lagrangian_learning_rate=0.03, max_steps=4, finetune_epochs=0,
                     sparsity_warmup_ratio=0.0)
    trainer = VTransTrainer(model=copy_of(teacher), teacher_model=teacher, args=args, train_dataset=toy_dataset())
    trainer.create_optimizer_and_scheduler(num_training_steps=4)
    lrs = sorted({group["lr"] for group in trainer.optimizer.param_groups})
    assert 0.07 in lrs and 0.03 in lrs
    trainer.train()
    gates = get_gates(trainer.model)
    # dense model far above a 50% target: the multiplier must have grown (gradient *ascent*)
    assert float(gates.lambda_1) > 0


def test_resume_restores_gates_and_lambda(tmp_path):
    teacher = tiny_bert()
    args = make_args(tmp_path, max_steps=6, save_strategy="steps", save_steps=3, finetune_epochs=0)
    first = VTransTrainer(model=copy_of(teacher), teacher_model=teacher, args=args, train_dataset=toy_dataset())
    first.train()
    checkpoint = tmp_path / "out" / "checkpoint-6"
    saved = load_file(checkpoint / "model.safetensors")
    gate_keys = [k for k in saved if k.startswith("vtrans_gates.")]
    assert "vtrans_gates.lambda_1" in gate_keys and any("log_sigma2" in k for k in gate_keys)

    second = VTransTrainer(model=copy_of(teacher), teacher_model=teacher, args=args, train_dataset=toy_dataset())
    second.train(resume_from_checkpoint=str(checkpoint))  # already at max_steps: restores, trains no step
    state = {f"vtrans_gates.{k}": v for k, v in get_gates(second.model).state_dict().items()}
    for key in gate_keys:
        torch.testing.assert_close(state[key], saved[key])
    assert second.state.global_step == 6


def test_pruned_model_fine_tunes_with_plain_trainer(tmp_path):
    teacher = tiny_bert()
    trainer = VTransTrainer(model=copy_of(teacher), teacher_model=teacher, args=make_args(tmp_path, finetune_epochs=0), train_dataset=toy_dataset())
    trainer.train()
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    before = {n: p.detach().clone() for n, p in loaded.named_parameters()}
    ft = Trainer(
        model=loaded,
        args=TrainingArguments(str(tmp_path / "ft"), max_steps=3, per_device_train_batch_size=8, report_to=[], use_cpu=True, save_strategy="no"),
        train_dataset=toy_dataset(),
    )
    result = ft.train()
    assert result.training_loss > 0
    assert any(not torch.equal(before[n], p) for n, p in loaded.named_parameters())
    loaded.save_pretrained(tmp_path / "ft_saved")
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "ft_saved").config.model_type == "vtrans_encoder"


def test_distilbert_with_flops_budget_and_rounding(tmp_path):
    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=4, hidden_dim=64, num_labels=2, max_position_embeddings=64)
    teacher = DistilBertForSequenceClassification(config)
    from hf_compress.vtrans import count_flops, dense_shape

    dense_flops = count_flops(dense_shape(teacher), 16)
    args = make_args(tmp_path, target_sparsity=None, target_flops=0.6 * dense_flops, flops_seq_len=16, round_to=8, finetune_epochs=0)
    trainer = VTransTrainer(model=copy_of(teacher), teacher_model=teacher, args=args, train_dataset=toy_dataset())
    trainer.train()
    pruned = trainer.materialize()
    assert pruned.config.pruning_report["flops_pruned"] <= 0.6 * dense_flops
    assert pruned.config.hidden_size % 8 == 0
    assert all(width % 8 == 0 for width in pruned.config.intermediate_size_per_layer)


def test_clear_errors(tmp_path):
    teacher = tiny_bert(num_labels=3)
    with pytest.raises(ValueError, match="different labels"):
        VTransTrainer(model=tiny_bert(num_labels=2), teacher_model=teacher, args=make_args(tmp_path), train_dataset=toy_dataset())
    with pytest.raises(ValueError, match="exactly one budget"):
        make_args(tmp_path, target_sparsity=None)
    with pytest.raises(ValueError, match="variant"):
        make_args(tmp_path, variant="fastest")
    with pytest.raises(ValueError, match="not below the dense"):
        VTransTrainer(model=tiny_bert(), args=make_args(tmp_path, target_sparsity=None, target_params=10**9), train_dataset=toy_dataset())
    with pytest.raises(TypeError, match="VTransTrainingArguments"):
        VTransTrainer(model=tiny_bert(), args=TrainingArguments(str(tmp_path)), train_dataset=toy_dataset())


def test_summary_files_are_json_serialisable(tmp_path):
    teacher = tiny_bert()
    trainer = VTransTrainer(model=copy_of(teacher), teacher_model=teacher, args=make_args(tmp_path, finetune_epochs=0), train_dataset=toy_dataset())
    trainer.train()
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_type"] == "vtrans_encoder"
    assert config["pruning_report"]["budget"]["metric"] == "layer_params"
    assert len(config["num_attention_heads_per_layer"]) == 3


def test_evaluation_during_pruning_sees_logits_and_thresholded_gates(tmp_path):
    teacher = tiny_bert()
    seen = []

    def metrics(prediction):
        seen.append(prediction.predictions)
        return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}

    args = make_args(tmp_path, eval_strategy="steps", eval_steps=3, max_steps=6, finetune_epochs=0)
    trainer = VTransTrainer(model=copy_of(teacher), teacher_model=teacher, args=args, train_dataset=toy_dataset(),
                            eval_dataset=toy_dataset(32, seed=1), compute_metrics=metrics)
    trainer.train()
    evaluations = [h for h in trainer.state.log_history if "eval_accuracy" in h]
    assert len(evaluations) == 2 and all(0.0 <= h["eval_accuracy"] <= 1.0 for h in evaluations)
    assert all(p.shape == (32, 2) for p in seen)  # logits only, no hidden states


@pytest.mark.parametrize("steps, expected", [(200, 0.02), (1000, 0.004), (10, 0.05), (10_000, 0.002)])
def test_default_gate_lr_follows_the_pruning_length(tmp_path, steps, expected):
    teacher = tiny_bert()
    trainer = VTransTrainer(model=copy_of(teacher), teacher_model=teacher, args=make_args(tmp_path, max_steps=steps),
                            train_dataset=toy_dataset())
    trainer.create_optimizer_and_scheduler(num_training_steps=steps)
    gate_ids = {id(p) for n, p in trainer.model.named_parameters() if n.startswith("vtrans_gates.") and "lambda" not in n}
    gate_groups = [g for g in trainer.optimizer.param_groups if id(g["params"][0]) in gate_ids]
    assert len(gate_groups) == 1 and gate_groups[0]["lr"] == pytest.approx(expected)
    trainer.lr_scheduler.step()
    assert gate_groups[0]["lr"] == pytest.approx(expected)  # constant, unlike the weights' schedule


def test_gate_groups_default_to_the_architecture_and_follow_the_user(tmp_path):
    # encoders whose weights train: no scalar gates over whole MHA / FFN sub-layers unless asked for
    trainer = VTransTrainer(model=tiny_bert(), args=make_args(tmp_path), train_dataset=toy_dataset())
    assert set(get_gates(trainer.model).groups) == {"hidden", "heads", "ffn"}
    # frozen weights (Faster-VTrans): the sub-layer gates, and the hidden dimension kept whole
    trainer = VTransTrainer(model=tiny_bert(), args=make_args(tmp_path, variant="faster"), train_dataset=toy_dataset())
    assert set(get_gates(trainer.model).groups) == {"heads", "ffn", "mha", "ffn_layer"}
    chosen = make_args(tmp_path, variant="faster", gate_groups=["hidden", "heads", "ffn", "mha", "ffn_layer"])
    trainer = VTransTrainer(model=tiny_bert(), args=chosen, train_dataset=toy_dataset())
    assert set(get_gates(trainer.model).groups) == {"hidden", "heads", "ffn", "mha", "ffn_layer"}
    chosen = make_args(tmp_path, gate_groups=["heads", "ffn", "mha", "ffn_layer"])
    trainer = VTransTrainer(model=tiny_bert(), args=chosen, train_dataset=toy_dataset())
    assert set(get_gates(trainer.model).groups) == {"heads", "ffn", "mha", "ffn_layer"}
    with pytest.raises(ValueError, match="gate_groups is empty"):
        make_args(tmp_path, gate_groups=[])
    with pytest.raises(ValueError, match="Unknown gate_groups"):
        make_args(tmp_path, gate_groups=["heads", "layers"])


def test_decoders_keep_every_gate_group_by_default(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    ))
    ids = torch.randint(2, 100, (8, 12)).tolist()
    train = datasets.Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * 12] * 8, "labels": ids})
    trainer = VTransTrainer(model=model, args=make_args(tmp_path, variant="faster", target_sparsity=0.2), train_dataset=train)
    assert {"heads", "kv_groups", "ffn", "mha", "ffn_layer"} <= set(get_gates(trainer.model).groups)


def test_taylor_gate_init_orders_the_start_by_importance(tmp_path):
    """gate_init='taylor': each group's initial log-alpha follows the Taylor score's ranks over the spread, with
    the mean start unchanged; the weights are untouched and the run prunes to budget as usual."""
    from hf_compress.vtrans.baselines import gate_taylor_scores

    student = tiny_bert()
    weights_before = {k: v.clone() for k, v in student.state_dict().items()}
    args = make_args(tmp_path, variant="faster", gate_init="taylor", gate_init_spread=4.0, gate_init_batches=3)
    trainer = VTransTrainer(model=student, teacher_model=tiny_bert(), args=args, train_dataset=toy_dataset())
    gates = get_gates(trainer.model)
    start = {name: gate.log_alpha().detach().clone() for name, gate in gates.groups.items()}
    scores = trainer.seed_gates_from_taylor()
    assert set(scores) == set(gates.groups)
    for name, gate in gates.groups.items():
        after = gate.log_alpha().detach()
        assert after.mean().item() == pytest.approx(start[name].mean().item(), abs=1e-5)
        assert (after.max() - after.min()).item() == pytest.approx(4.0, abs=1e-4)
        order = scores[name].reshape(-1).argsort(stable=True)
        assert torch.all(after.reshape(-1)[order].diff() < 0)  # more important -> lower log-alpha
        assert gate.mu.grad is None  # the scoring pass leaves no gradient behind
    assert not gates.frozen and trainer.model.training
    for k, v in trainer.model.state_dict().items():
        if k in weights_before:
            torch.testing.assert_close(v, weights_before[k])
    # the scores are the first-order Taylor scores the baseline ranks by, through the same gates
    again = gate_taylor_scores(trainer.model, gates, trainer.get_train_dataloader(), max_batches=1)
    assert all(torch.all(s >= 0) for s in again.values()) and any(s.sum() > 0 for s in again.values())

    # a whole run seeds the gates first and records it
    args = make_args(tmp_path, variant="faster", gate_init="taylor", gate_init_batches=2)
    trainer = VTransTrainer(model=tiny_bert(), teacher_model=tiny_bert(), args=args, train_dataset=toy_dataset())
    trainer.train()
    report = trainer.materialize().config.pruning_report
    assert report["gate_init"] == "taylor" and report["layer_sparsity"] >= 0.5
    with pytest.raises(ValueError, match="gate_init must be one of"):
        make_args(tmp_path, gate_init="magnitude")


@pytest.mark.parametrize("variant, setting, gate_dropout", [
    ("faster", False, False), ("faster", None, True), ("vtrans", None, True), ("vtrans", False, False),
])
def test_gate_phase_dropout_off_keeps_the_gates_sampling_and_the_finetune_its_dropout(tmp_path, variant, setting, gate_dropout):
    """gate_phase_dropout=False: the backbone's dropout is off while the gates train (any variant), the gates still
    sample, and the fine-tune of the pruned model trains with dropout again. By default dropout stays on."""
    student = tiny_bert()
    for module in student.modules():  # a dropout high enough that a forward pass with it is never the same twice
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.5
    seen: dict[str, list[bool]] = {"hidden": [], "attention": []}
    layer = student.bert.encoder.layer[1]
    layer.output.dropout.register_forward_hook(lambda m, i, o: seen["hidden"].append(m.training))
    layer.attention.self.register_forward_hook(lambda m, i, o: seen["attention"].append(m.training))
    options = {} if setting is None else {"gate_phase_dropout": setting}
    args = make_args(tmp_path, variant=variant, num_train_epochs=1, finetune_epochs=0, **options)
    trainer = VTransTrainer(model=student, teacher_model=tiny_bert(), args=args, train_dataset=toy_dataset(n=32))
    assert args.gate_phase_dropout is gate_dropout

    gates = get_gates(trainer.model)
    batch = {k: torch.as_tensor(v) for k, v in toy_dataset(n=8)[:8].items()}
    trainer.model.train()
    losses = [trainer.compute_loss(trainer.model, batch).item() for _ in range(2)]
    assert seen["hidden"][-2:] == [gate_dropout] * 2 and seen["attention"][-2:] == [gate_dropout] * 2
    assert gates.training and trainer.model.training  # gates keep sampling; the loss still has its pruning terms
    assert losses[0] != losses[1]  # the gates sample: each pass differs
    gates.frozen = True  # deterministic gates: two passes now differ only through dropout
    again = [trainer.compute_loss(trainer.model, batch).item() for _ in range(2)]
    assert (again[0] != again[1]) is gate_dropout
    gates.frozen = False

    seen["hidden"].clear()
    trainer.train()
    assert seen["hidden"] and all(flag is gate_dropout for flag in seen["hidden"])
    pruned = trainer.materialize()
    assert pruned.config.pruning_report["gate_phase_dropout"] is gate_dropout

    # the fine-tune of the materialized model trains with its dropout, whatever the gate phase did
    flags: list[bool] = []
    for module in pruned.modules():
        if isinstance(module, torch.nn.Dropout):
            module.register_forward_hook(lambda m, i, o: flags.append(m.training))
    trainer._finetune(pruned, 1.0)
    assert flags and all(flags)


def test_finetune_without_dropout_and_with_frozen_embeddings(tmp_path):
    """finetune_dropout=False trains the materialized model with every dropout off; finetune_freeze_embeddings=True
    leaves the input embeddings exactly as pruned while the layers train, and hands the model back trainable."""
    args = make_args(tmp_path, variant="faster", num_train_epochs=1, finetune_epochs=0,
                     finetune_dropout=False, finetune_freeze_embeddings=True)
    trainer = VTransTrainer(model=tiny_bert(), teacher_model=tiny_bert(), args=args, train_dataset=toy_dataset(n=32))
    trainer.train()
    pruned = trainer.materialize()
    for module in pruned.modules():  # a dropout that would change every forward pass if it were on
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.5
    flags: list[bool] = []
    for module in pruned.modules():
        if isinstance(module, torch.nn.Dropout):
            module.register_forward_hook(lambda m, i, o: flags.append(m.training))
    before = {k: v.clone() for k, v in pruned.state_dict().items()}
    embedding_name = next(k for k, v in pruned.named_parameters() if v is pruned.get_input_embeddings().weight)
    trainer._finetune(pruned, 1.0)
    assert flags and not any(flags)
    after = pruned.state_dict()
    torch.testing.assert_close(after[embedding_name], before[embedding_name], rtol=0, atol=0)
    changed = [k for k in before if k != embedding_name and not torch.equal(before[k], after[k])]
    assert any("layer" in k for k in changed)  # the layers did train
    assert pruned.get_input_embeddings().weight.requires_grad

    # the defaults keep both: dropout on, embeddings trained
    defaults = make_args(tmp_path, variant="faster")
    assert defaults.finetune_dropout and not defaults.finetune_freeze_embeddings
    trainer = VTransTrainer(model=tiny_bert(), teacher_model=tiny_bert(), args=make_args(
        tmp_path, variant="faster", num_train_epochs=1, finetune_epochs=1), train_dataset=toy_dataset(n=32))
    trainer.train()
    report = trainer.pruned_model.config.pruning_report
    assert report["finetune_dropout"] is True and report["finetune_freeze_embeddings"] is False
    assert report["finetune_epochs"] == 1
