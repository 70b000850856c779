"""DCANASConfig / DCANASForImageClassification: shapes, exact costs, Hub round trips, NAS-Bench-201 table."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import hf_compress.nas  # noqa: F401  (registers the Auto classes)
from hf_compress.nas import DARTS_V2, DCANASConfig, DCANASForImageClassification, DCANASModel
from hf_compress.nas.cost import (
    count_macs,
    darts_network_cost,
    nb201_network_cost,
    network_cost,
    network_cost_breakdown,
)
from hf_compress.nas.modeling_dcanas import DCANASDartsCell, DCANASNB201Cell
from hf_compress.nas.spaces import NB201_LARGEST, NB201_SMALLEST, DartsGenotype, NB201Genotype
from nas_tiny import NB201_EXAMPLE

NB201_GENOTYPES = [
    NB201_LARGEST.to_string(),
    NB201_SMALLEST.to_string(),
    NB201_EXAMPLE,
    "|none~0|+|nor_conv_1x1~0|none~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|",
    "|nor_conv_1x1~0|+|none~0|none~1|+|none~0|none~1|none~2|",  # output node only reads zeros
]
DARTS_MIXED = DartsGenotype(
    normal=(("sep_conv_5x5", 1), ("dil_conv_5x5", 0), ("avg_pool_3x3", 2), ("none", 1),
            ("max_pool_3x3", 3), ("dil_conv_3x3", 0), ("skip_connect", 4), ("sep_conv_3x3", 2)),
    normal_concat=(2, 4, 5),
    reduce=(("sep_conv_3x3", 0), ("dil_conv_5x5", 1), ("avg_pool_3x3", 2), ("skip_connect", 1),
            ("none", 0), ("none", 3), ("sep_conv_5x5", 4), ("max_pool_3x3", 0)),
    reduce_concat=(2, 3, 4, 5),
)


def tiny_config(space: str = "nb201", **overrides) -> DCANASConfig:
    if space == "nb201":
        kwargs = dict(genotype=NB201_EXAMPLE, init_channels=4, cells_per_stage=1, num_classes=5)
    else:
        kwargs = dict(search_space="darts", genotype=DARTS_V2, init_channels=4, num_layers=4, num_classes=5)
    kwargs.update(overrides)
    return DCANASConfig(**kwargs)


def numel_by_prefix(model, prefix: str) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if name.startswith(prefix + "."))


def assert_costs_exact(config: DCANASConfig) -> None:
    torch.manual_seed(0)
    model = DCANASForImageClassification(config)
    breakdown = network_cost_breakdown(config)
    for prefix, cost in breakdown.items():
        assert cost.params == numel_by_prefix(model, prefix), prefix
    assert sum(c.params for c in breakdown.values()) == sum(p.numel() for p in model.parameters())
    pixel_values = torch.randn(2, config.num_channels, config.image_size, config.image_size)
    macs, by_module = count_macs(model, pixel_values, by_module=True)
    for prefix, cost in breakdown.items():
        if prefix != "auxiliary_head":  # the auxiliary head only runs while training
            assert cost.macs == sum(v for k, v in by_module.items() if k == prefix or k.startswith(prefix + ".")), prefix
    assert network_cost(config).macs == macs


# ------------------------------------------------------------------------------------------- config


def test_config_defaults_resolve_from_the_space():
    nb201 = DCANASConfig()
    assert (nb201.search_space, nb201.init_channels, nb201.cells_per_stage, nb201.num_layers) == ("nb201", 16, 5, None)
    assert nb201.genotype == NB201_LARGEST.to_string() and nb201.num_classes == nb201.num_labels == 10
    darts = DCANASConfig(search_space="darts", genotype=str(DARTS_V2).replace("range(2, 6)", "[2, 3, 4, 5]"))
    assert (darts.init_channels, darts.num_layers, darts.stem_multiplier, darts.cells_per_stage) == (36, 20, 3, None)
    assert darts.genotype == str(DARTS_V2) and darts.parsed_genotype == DARTS_V2
    assert darts.reduction_layers == (6, 13)
    again = DCANASConfig.from_dict(darts.to_dict())
    assert again.genotype == darts.genotype and again.num_layers == 20
    assert DCANASConfig(num_classes=100).num_labels == 100


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(genotype="|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|"), "invalid genotype for search_space='nb201'.*Unknown nb201 op 'conv'"),
        (dict(search_space="darts", genotype=NB201_EXAMPLE), "is a nb201 genotype but the search space is 'darts'"),
        (dict(genotype=str(DARTS_V2)), "is a darts genotype but the search space is 'nb201'"),
        (dict(search_space="nasnet"), "Unknown search space 'nasnet'"),
        (dict(num_layers=8), "num_layers applies to the DARTS space"),
        (dict(search_space="darts", cells_per_stage=2), "cells_per_stage applies to the NAS-Bench-201 space"),
        (dict(image_size=30), "image_size must be divisible by 4"),
        (dict(init_channels=0), "init_channels must be an integer >= 2"),
        (dict(search_space="darts", use_auxiliary_head=True, image_size=64), "auxiliary head .* image_size=32"),
        (dict(use_auxiliary_head=True), "auxiliary head exists only for the DARTS space"),
        (dict(drop_path_prob=1.0), r"drop_path_prob must be in \[0, 1\)"),
        (dict(stem_multiplier=3), "stem_multiplier=1"),
    ],
    ids=["bad-op", "nb201-in-darts", "darts-in-nb201", "space", "layers", "cells", "size", "channels", "aux-size",
         "aux-nb201", "drop-path", "stem"],
)
def test_config_validation_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DCANASConfig(**kwargs)


# ------------------------------------------------------------------------------------------- shapes


def test_cell_and_network_shapes():
    cell = DCANASNB201Cell(NB201Genotype.parse(NB201_EXAMPLE), 8)
    assert cell(torch.randn(2, 8, 16, 16)).shape == (2, 8, 16, 16)
    normal = DCANASDartsCell(DARTS_V2.normal, DARTS_V2.normal_concat, 12, 12, 8, False, False)
    assert normal(torch.randn(2, 12, 16, 16), torch.randn(2, 12, 16, 16)).shape == (2, 32, 16, 16)
    reduce = DCANASDartsCell(DARTS_MIXED.reduce, DARTS_MIXED.reduce_concat, 12, 24, 8, True, True)
    assert reduce(torch.randn(2, 12, 32, 32), torch.randn(2, 24, 16, 16)).shape == (2, 32, 8, 8)

    model = DCANASForImageClassification(tiny_config()).eval()
    out = model(torch.randn(3, 3, 32, 32), output_hidden_states=True)
    assert out.logits.shape == (3, 5) and out.loss is None
    assert len(out.hidden_states) == 1 + 3 + 2  # stem, 3 cells, 2 residual blocks
    assert [tuple(h.shape[1:]) for h in out.hidden_states] == [
        (4, 32, 32), (4, 32, 32), (8, 16, 16), (8, 16, 16), (16, 8, 8), (16, 8, 8)]
    darts = DCANASForImageClassification(tiny_config("darts")).eval()
    out = darts(torch.randn(2, 3, 32, 32), output_hidden_states=True)
    assert out.logits.shape == (2, 5)
    # 4 cells, reductions at 1 and 2: 32 -> 16 -> 8, multiplier 4 -> 4C, 8C, 16C, 16C channels
    assert [tuple(h.shape[1:]) for h in out.hidden_states[1:]] == [(16, 32, 32), (32, 16, 16), (64, 8, 8), (64, 8, 8)]
    base = DCANASModel(tiny_config("darts")).eval()
    assert base(torch.randn(1, 3, 32, 32)).pooler_output.shape == (1, 64)


def test_forward_rejects_wrong_image_size_or_channels():
    model = DCANASForImageClassification(tiny_config()).eval()
    with pytest.raises(ValueError, match=r"shape \[2, 3, 28, 28\] .* \[batch, 3, 32, 32\].*image processor"):
        model(torch.randn(2, 3, 28, 28))
    with pytest.raises(ValueError, match=r"num_channels=3"):
        model(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="pixel_values"):
        model()
    gray = DCANASForImageClassification(tiny_config(num_channels=1, image_size=16))
    assert gray.eval()(torch.randn(1, 1, 16, 16)).logits.shape == (1, 5)


def test_loss_auxiliary_head_and_drop_path():
    torch.manual_seed(0)
    config = tiny_config("darts", use_auxiliary_head=True, drop_path_prob=0.3)
    model = DCANASForImageClassification(config)
    pixel_values, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 4])
    model.eval()
    out = model(pixel_values, labels=labels)
    expected = torch.nn.functional.cross_entropy(out.logits, labels)
    assert torch.allclose(out.loss, expected)
    assert torch.equal(model(pixel_values).logits, out.logits)  # no drop path in eval
    model.train()
    torch.manual_seed(1)
    train_out = model(pixel_values, labels=labels)
    train_out.loss.backward()
    assert model.auxiliary_head.classifier.weight.grad is not None  # the auxiliary loss is part of the loss
    model.drop_path_prob = 0.0
    assert model.model.drop_path_prob == 0.0


# ------------------------------------------------------------------------------------------- costs


@pytest.mark.parametrize("genotype", NB201_GENOTYPES)
def test_nb201_costs_are_exact(genotype):
    assert_costs_exact(DCANASConfig(genotype=genotype, init_channels=8, cells_per_stage=2))


@pytest.mark.parametrize("genotype", [DARTS_V2, DARTS_MIXED], ids=["darts-v2", "mixed"])
def test_darts_costs_are_exact(genotype):
    assert_costs_exact(DCANASConfig(search_space="darts", genotype=genotype, init_channels=6, num_layers=5))
    config = DCANASConfig(search_space="darts", genotype=genotype, init_channels=4, num_layers=6, use_auxiliary_head=True)
    model = DCANASForImageClassification(config)
    assert network_cost(config, include_auxiliary=True).params == sum(p.numel() for p in model.parameters())
    assert network_cost(config).params == sum(
        p.numel() for n, p in model.named_parameters() if not n.startswith("auxiliary_head.")
    )
    assert_costs_exact(config)


def test_published_network_sizes():
    """NAS-Bench-201 (CIFAR-10, C=16, N=5) spans 0.073M..1.531M params and 7.78..220.1M MACs; DARTS-V2 at
    C=36 with 20 cells has 3.35M params (the DARTS paper's 3.3M) and ~528M MACs."""
    largest, smallest = nb201_network_cost(NB201_LARGEST), nb201_network_cost(NB201_SMALLEST)
    assert (largest.params, largest.macs) == (1_531_546, 220_119_680)
    assert (smallest.params, smallest.macs) == (73_306, 7_783_040)
    v2 = darts_network_cost(DARTS_V2)
    assert (v2.params, v2.macs) == (3_349_342, 528_359_040)
    nb201_full = DCANASForImageClassification(DCANASConfig())
    assert sum(p.numel() for p in nb201_full.parameters()) == 1_531_546
    darts_full = DCANASForImageClassification(DCANASConfig(search_space="darts"))
    assert sum(p.numel() for p in darts_full.parameters()) == 3_349_342
    assert count_macs(darts_full, torch.randn(1, 3, 32, 32)) == 528_359_040


# ---------------------------------------------------------------------------------- save / load / Hub


@pytest.mark.parametrize("space", ["nb201", "darts"])
def test_save_load_round_trip_identical_logits(tmp_path, space):
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification

    torch.manual_seed(0)
    model = DCANASForImageClassification(tiny_config(space)).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so buffers must round-trip too
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d) and module.running_mean is not None:
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    model.save_pretrained(tmp_path)
    saved = sorted(os.listdir(tmp_path))
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "modeling_dcanas.py", "ops.py",
            "spaces.py", "configuration_dcanas.py"} <= set(saved)
    config_json = json.loads((tmp_path / "config.json").read_text())
    assert config_json["model_type"] == "dcanas" and config_json["genotype"] == model.config.genotype
    assert config_json["auto_map"]["AutoModelForImageClassification"] == "modeling_dcanas.DCANASForImageClassification"
    assert type(AutoConfig.from_pretrained(tmp_path)) is DCANASConfig
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert type(loaded) is DCANASForImageClassification
    pixel_values = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(pixel_values).logits, loaded(pixel_values).logits)
        base = AutoModel.from_pretrained(tmp_path).eval()
        assert torch.equal(base(pixel_values).pooler_output, model.model(pixel_values).pooler_output)
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert processor.size == {"height": 32, "width": 32}
    assert processor.image_mean == pytest.approx([0.4914, 0.4822, 0.4465])


def test_pipeline_on_a_saved_folder(tmp_path):
    from PIL import Image
    from transformers import pipeline

    config = tiny_config(id2label={i: name for i, name in enumerate(["cat", "dog", "ship", "frog", "car"])})
    DCANASForImageClassification(config).save_pretrained(tmp_path)
    classifier = pipeline("image-classification", model=str(tmp_path))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (45, 60, 3), dtype=np.uint8))
    predictions = classifier(image, top_k=5)
    assert sorted(p["label"] for p in predictions) == ["car", "cat", "dog", "frog", "ship"]
    assert sum(p["score"] for p in predictions) == pytest.approx(1.0, abs=1e-5)


def test_saved_folder_loads_without_hf_compress(tmp_path):
    """The folder carries its modeling code: transformers alone loads it with trust_remote_code=True."""
    torch.manual_seed(0)
    model = DCANASForImageClassification(tiny_config("darts")).eval()
    model.save_pretrained(tmp_path / "model")
    pixel_values = torch.randn(1, 3, 32, 32)
    torch.save(pixel_values, tmp_path / "input.pt")
    expected = model(pixel_values).logits
    script = (
        "import sys\n"
        "sys.modules['hf_compress'] = None\n"
        "import torch\n"
        "from transformers import AutoModelForImageClassification\n"
        f"m = AutoModelForImageClassification.from_pretrained({str(tmp_path / 'model')!r}, trust_remote_code=True)\n"
        f"x = torch.load({str(tmp_path / 'input.pt')!r})\n"
        f"torch.save(m.eval()(x).logits, {str(tmp_path / 'out.pt')!r})\n"
        "print(type(m).__module__)\n"
    )
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1].startswith("transformers_modules.")
    assert torch.allclose(torch.load(tmp_path / "out.pt"), expected, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------- NAS-Bench-201 table


@pytest.fixture(scope="module")
def nb201_table():
    from hf_compress.nas.nb201_table import load_nb201_table

    try:
        return load_nb201_table()
    except FileNotFoundError as err:
        pytest.skip(f"NAS-Bench-201 table not available: {err}")


def test_nb201_table_lookup_and_budgets(nb201_table):
    table = nb201_table
    assert len(table) == 15625 and "cifar10_test_acc_12ep" in table.metrics
    assert all(entry.arch_str == NB201Genotype.parse(entry.arch_str).to_string() for entry in table.entries[:2000])
    accuracies = table.lookup(NB201_EXAMPLE)  # row 1 of the CSV
    assert table.index_of(NB201_EXAMPLE) == 1
    assert accuracies["cifar10_test_acc_12ep"] == pytest.approx(88.22)
    assert accuracies["cifar100_xtest_acc_12ep"] == pytest.approx(58.26)
    assert table.cost(NB201_LARGEST).params == 1_531_546 and table.cost_range("params") == (73_306, 1_531_546)
    best, accuracy = table.best()
    assert accuracy == pytest.approx(89.16)  # the 12-epoch maximum (PROVENANCE.md)
    assert table.best_within_budget(2e6)[1] == accuracy
    assert table.best_within_budget(73_305) is None
    previous = 0.0
    for budget in (73_306, 2e5, 4e5, 8e5, 1.6e6):
        entry, acc = table.best_within_budget(budget)
        assert table.cost(entry.genotype).params <= budget and acc >= previous
        previous = acc
    assert table.regret(best.genotype, 2e6) == 0.0
    assert table.regret(NB201_EXAMPLE, 2e6) == pytest.approx(89.16 - 88.22)
    assert table.best_within_budget(1e7, cost="macs")[1] < accuracy
    with pytest.raises(ValueError, match="Unknown NAS-Bench-201 metric"):
        table.best("cifar10_acc")
