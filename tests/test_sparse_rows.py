"""Lazy item-table updates (hf_interest.training.sparse_rows) against the plain dense code they stand in for."""

import pytest
import torch
from accelerate import Accelerator
from tiny import tiny_config
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from hf_interest import InterestForNextItemPrediction
from hf_interest.training.arguments import TrainArguments
from hf_interest.training.features import lazy_item_tables
from hf_interest.training.sparse_rows import (
    LazyAdamW,
    LazyRowEMA,
    clip_grad_norm_,
    enable_sparse_item_gradients,
    sparse_item_gradients_supported,
)


def tiny(**kwargs):
    config = tiny_config(num_items=40, loss_type="sampled_softmax", num_negative_samples=10, **kwargs)
    torch.manual_seed(0)
    model = InterestForNextItemPrediction(config).train()
    if config.uses_text:
        model.set_item_text_embeddings(torch.randn(40, config.text_embedding_size))
    return model


def batch():
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(3, 40, (4, 12), generator=generator)
    input_ids[0, :5] = 0  # left padding
    labels = torch.roll(input_ids, -1, dims=1)
    labels[:, -1] = -100
    labels[0, :5] = -100
    return {"input_ids": input_ids, "attention_mask": (input_ids != 0).long(), "labels": labels}


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]


def grads(model, inputs):
    torch.manual_seed(7)  # the same dropout masks, item-id dropout and drawn negatives in both models
    model(**inputs).loss.backward()
    return {name: param.grad for name, param in model.named_parameters()}


OPTIONS = [
    {},
    {"loss_exclude_seen": True},
    {"item_representation": "id+text", "text_embedding_size": 8, "item_id_dropout": 0.3},
    {"tie_word_embeddings": False},  # a separate output table: two tables, each with its own sparse gradient
    {"item_output_residual": True},  # the tied table and the output-side residual: two tables
    {"tie_word_embeddings": False, "item_representation": "id+text", "text_embedding_size": 8, "item_id_dropout": 0.3},
]
TABLES = ("model.item_embeddings.weight", "item_head.weight", "item_output_residual.weight")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("options", OPTIONS)
def test_sparse_item_gradients_equal_the_dense_ones(options, device):
    dense, sparse = tiny(**options).to(device), tiny(**options).to(device)
    tables = enable_sparse_item_gradients(sparse)
    if sparse.config.item_output_residual:
        assert tables == (sparse.model.item_embeddings.weight, sparse.item_output_residual.weight)
    elif sparse.config.tie_word_embeddings:
        assert tables == (sparse.model.item_embeddings.weight,)
        assert tables[0] is sparse.item_head.weight
    else:
        assert tables == (sparse.model.item_embeddings.weight, sparse.item_head.weight)
    inputs = {name: tensor.to(device) for name, tensor in batch().items()}
    expected, got = grads(dense, inputs), grads(sparse, inputs)
    assert got.keys() == expected.keys()
    assert sum(name in TABLES for name in got) == len(tables)
    for name, grad in got.items():
        assert grad.is_sparse == (name in TABLES), name
        if name in TABLES:
            # fewer rows than the vocabulary: the history, the targets and the drawn negatives only
            assert grad.coalesce().indices().shape[1] < 40
            grad = grad.to_dense()
        torch.testing.assert_close(grad, expected[name], rtol=1e-6, atol=1e-7, msg=name)


def test_sparse_gradients_are_refused_where_they_do_not_apply():
    full = tiny()
    full.config.loss_type = "full_softmax"
    assert "full softmax" in sparse_item_gradients_supported(full)
    odd = tiny(tie_word_embeddings=False)
    odd.item_head = nn.Linear(16, 7)  # an output layer that is not an item table
    assert "not an item table" in sparse_item_gradients_supported(odd)
    with pytest.raises(ValueError, match="not an item table"):
        enable_sparse_item_gradients(odd)
    assert sparse_item_gradients_supported(tiny()) is None
    assert sparse_item_gradients_supported(tiny(tie_word_embeddings=False)) is None


def _sparse(rows: list[int], values: torch.Tensor, num_rows: int) -> torch.Tensor:
    indices = torch.tensor([rows], device=values.device)
    return torch.sparse_coo_tensor(indices, values, (num_rows, values.shape[1]), check_invariants=True)


def _pair(weight_decay: float, device: str = "cpu"):
    torch.manual_seed(3)
    table, dense = torch.randn(6, 4, device=device), torch.randn(5, device=device)
    params = [nn.Parameter(table.clone()), nn.Parameter(dense.clone())]
    reference = [nn.Parameter(table.clone()), nn.Parameter(dense.clone())]
    options = {"lr": 0.05, "betas": (0.9, 0.98), "weight_decay": weight_decay}
    return params, LazyAdamW(params, **options), reference, torch.optim.AdamW(reference, **options)


@pytest.mark.parametrize("device", DEVICES)
def test_lazy_adamw_equals_adamw_when_every_row_is_in_every_step(device):
    params, lazy, reference, adamw = _pair(weight_decay=0.1, device=device)
    for step in range(6):
        values = torch.randn(8, 4, device=device)
        rows = [0, 1, 2, 3, 4, 5, 2, 4]  # every row, two of them twice (summed, as a dense gradient would)
        params[0].grad = _sparse(rows, values, 6)
        reference[0].grad = params[0].grad.to_dense()
        params[1].grad = reference[1].grad = torch.randn(5, device=device)
        for optimizer in (lazy, adamw):
            optimizer.param_groups[0]["lr"] = 0.05 / (step + 1)  # a schedule, as the loop's
            optimizer.step()
        for mine, theirs in zip(params, reference, strict=True):
            torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-7)
            for key in ("exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(lazy.state[mine][key], adamw.state[theirs][key], rtol=1e-6, atol=1e-8)


def test_lazy_adamw_updates_only_the_rows_in_the_gradient():
    params, lazy, _, _ = _pair(weight_decay=0.1)
    touched = [1, 4]
    rows = nn.Parameter(params[0].detach()[touched].clone())  # a dense AdamW over the touched rows alone
    adamw = torch.optim.AdamW([rows], lr=0.05, betas=(0.9, 0.98), weight_decay=0.1)
    untouched = params[0].detach()[[0, 2, 3, 5]].clone()
    for _ in range(4):
        values = torch.randn(2, 4)
        params[0].grad, rows.grad = _sparse(touched, values, 6), values.clone()
        lazy.step()
        adamw.step()
        assert lazy.last_rows[params[0]][0].tolist() == touched
    assert torch.equal(params[0].detach()[[0, 2, 3, 5]], untouched)  # no decay, no momentum
    assert not lazy.state[params[0]]["exp_avg"][[0, 2, 3, 5]].any()
    torch.testing.assert_close(params[0].detach()[touched], rows.detach(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(lazy.state[params[0]]["exp_avg_sq"][touched], adamw.state[rows]["exp_avg_sq"])


def test_clip_grad_norm_counts_sparse_gradients_as_torch_counts_dense_ones():
    torch.manual_seed(4)
    params = [nn.Parameter(torch.zeros(6, 3)), nn.Parameter(torch.zeros(4))]
    reference = [nn.Parameter(torch.zeros(6, 3)), nn.Parameter(torch.zeros(4))]
    params[0].grad = _sparse([1, 3, 1], torch.randn(3, 3), 6)  # row 1 twice: its norm is of the sum
    reference[0].grad = params[0].grad.to_dense()
    params[1].grad, reference[1].grad = torch.randn(4), None
    reference[1].grad = params[1].grad.clone()
    total = clip_grad_norm_(params, 0.5)
    expected = torch.nn.utils.clip_grad_norm_(reference, 0.5)
    torch.testing.assert_close(total, expected)
    assert total > 0.5  # so the gradients were scaled
    torch.testing.assert_close(params[0].grad.to_dense(), reference[0].grad)
    torch.testing.assert_close(params[1].grad, reference[1].grad)


class TableModel(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.table = nn.Parameter(torch.randn(10, 3))
        self.output = nn.Parameter(torch.randn(10, 3))  # a second lazily updated table (a separate output table)
        self.linear = nn.Linear(3, 2)
        self.register_buffer("counts", torch.zeros(10))


def test_lazy_row_ema_equals_the_dense_average_of_the_same_weights():
    model = TableModel()
    optimizer = LazyAdamW(model.parameters(), lr=0.1)
    decay = 0.8
    dense = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))
    lazy_average = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))
    lazy = LazyRowEMA(lazy_average, model, optimizer, (model.table, model.output), decay)
    generator = torch.Generator().manual_seed(6)
    for step in range(12):
        rows = torch.randperm(10, generator=generator)[: 1 + step % 3].tolist()  # most rows idle for many steps
        model.table.grad = _sparse(rows, torch.randn(len(rows), 3, generator=generator), 10)
        other = torch.randperm(10, generator=generator)[: 1 + step % 2].tolist()  # other rows of the other table
        model.output.grad = _sparse(other, torch.randn(len(other), 3, generator=generator), 10) if step % 4 else None
        model.linear.weight.grad = torch.randn(2, 3, generator=generator)
        model.linear.bias.grad = torch.randn(2, generator=generator)
        optimizer.step()
        model.counts += 1
        dense.update_parameters(model)
        lazy.update()
        if step in (0, 5, 11):  # read mid-training, as validation does, then go on
            if step == 11:  # before the read, rows idle since their last change lag behind: the work saved
                assert not torch.allclose(lazy_average.module.table, dense.module.table)
                assert not torch.allclose(lazy_average.module.output, dense.module.output)
            lazy.synchronize()
            for (name, mine), theirs in zip(lazy_average.module.named_parameters(), dense.module.parameters(),
                                            strict=True):  # fmt: skip
                torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6, msg=name)
            assert torch.equal(lazy_average.module.counts, dense.module.counts)
            assert lazy_average.n_averaged == dense.n_averaged


def test_lazy_updates_are_chosen_with_the_sampled_softmax_and_refused_where_they_do_not_apply(tmp_path):
    accelerator = Accelerator(cpu=True)
    args = TrainArguments(output_dir=str(tmp_path))
    assert len(lazy_item_tables(tiny(), "next-item", args, accelerator, adapters=False)) == 1
    assert len(lazy_item_tables(tiny(tie_word_embeddings=False), "next-item", args, accelerator, adapters=False)) == 2
    full = tiny()
    full.config.loss_type = "full_softmax"
    assert lazy_item_tables(full, "next-item", args, accelerator, adapters=False) is None  # auto: dense
    assert not full.model.item_embeddings.sparse
    lazy = TrainArguments(output_dir=str(tmp_path), item_table_updates="lazy")
    with pytest.raises(ValueError, match="full softmax reads every row"):
        lazy_item_tables(full, "next-item", lazy, accelerator, adapters=False)
    with pytest.raises(ValueError, match="--task click trains a head"):
        lazy_item_tables(tiny(), "click", lazy, accelerator, adapters=False)
    dense = TrainArguments(output_dir=str(tmp_path), item_table_updates="dense")
    assert lazy_item_tables(tiny(), "next-item", dense, accelerator, adapters=False) is None
    with pytest.raises(ValueError, match="item_table_updates"):
        TrainArguments(output_dir=str(tmp_path), item_table_updates="sparse")


@pytest.mark.parametrize("tied", [True, False])
def test_a_sparse_model_saves_and_loads_as_a_plain_one(tmp_path, tied):
    model = tiny(tie_word_embeddings=tied)
    enable_sparse_item_gradients(model)
    model.save_pretrained(tmp_path)
    loaded = InterestForNextItemPrediction.from_pretrained(tmp_path)
    assert not loaded.model.item_embeddings.sparse
    assert torch.equal(loaded.model.item_embeddings.weight, model.model.item_embeddings.weight)
    assert torch.equal(loaded.item_head.weight, model.item_head.weight)
    assert (loaded.item_head.weight is loaded.model.item_embeddings.weight) == tied


def test_item_table_benchmark_measures_every_cell(tmp_path):
    """benchmarks/benchmark_item_table.py: a row per (vocabulary, updates) cell, the slopes and the ratios."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "benchmark_item_table.py"
    out = tmp_path / "table.json"
    run = subprocess.run([sys.executable, str(script), "--vocabulary", "500", "3000", "--steps", "1",
                          "--output_json", str(out)], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert sorted((r["vocabulary"], r["updates"]) for r in rows) == [(500, "dense"), (500, "lazy"), (3000, "dense"),
                                                                     (3000, "lazy")]  # fmt: skip
    assert all(r["step_ms"] > 0 and r["peak_rss_mb"] > 0 for r in rows)
    assert "lazy: peak RSS" in run.stdout and "a lazy step takes" in run.stdout
