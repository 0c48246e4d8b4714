"""Lazy item-table updates: a training step that costs the rows of its batch, not the whole catalogue.

With the sampled softmax a step reads a few thousand rows of the item table (the history, the targets, the drawn
negatives), yet dense training writes all of them: the gradient is a `(num_items, hidden)` tensor, and AdamW and the
weight average then read and write every row, with their temporaries. At a million items that is most of a step and
about three extra copies of the table in memory. This module makes those parts cost the rows of the batch:

- `enable_sparse_item_gradients(model)` sets `sparse=True` on the id embeddings (a standard `nn.Embedding` option);
  the model's sampled softmax gathers the output rows with `F.embedding` under the same flag, so each item table's
  gradient is one sparse tensor of the rows read: with the output tied to the id embeddings (the default), one table
  read on either side; with a separate output table (`tie_word_embeddings=False`), two tables, each updated and
  averaged by its own rows. The model file is unchanged plain PyTorch; a saved and reloaded model is dense again.
- `LazyAdamW` is `torch.optim.AdamW` for every dense parameter and, for a sparse gradient, the lazy Adam of large
  embedding tables (TensorFlow Addons' `LazyAdam`, torch's `SparseAdam`, FBGEMM's table-batched Adam): only the rows
  in the gradient are updated, their moments and their weight decay included; the other rows, and their moments,
  stay as they are until the rows are read again. This is a different optimizer for the table, not a faster AdamW:
  when every row is in every step's gradient it equals AdamW exactly (`tests/test_sparse_rows.py`).
- `clip_grad_norm_` is torch's global-norm clipping with sparse gradients counted (torch's own cannot norm them).
- `LazyRowEMA` updates the weight average (`AveragedModel` with `get_ema_multi_avg_fn`) the same way: the dense
  parameters every step, a table row when it changes. An untouched row is constant, so its average follows in closed
  form, `ema <- w + decay**k * (ema - w)` after `k` steps; `synchronize()` brings every row up to date before the
  average is read (evaluation, saving). The result equals the dense average of the same weights.

`training.loop` applies all of it with `--item_table_updates lazy`, which `auto` picks with the sampled softmax.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def item_table(model: nn.Module) -> nn.Embedding | None:
    """The id embeddings of an hf_interest next-item model (the input-side item table), or None."""
    backbone = getattr(model, "model", model)
    embeddings = getattr(backbone, "item_embeddings", None)
    return embeddings if isinstance(embeddings, nn.Embedding) else None


def item_tables(model: nn.Module) -> tuple[nn.Parameter, ...]:
    """
    The item tables a step reads by row: the id embeddings' weight, the output layer's weight where it is a separate
    table (`tie_word_embeddings=False`), and the output-side residual (`item_output_residual`). Empty without id
    embeddings.
    """
    embeddings = item_table(model)
    if embeddings is None:
        return ()
    tables = [embeddings.weight]
    output = getattr(getattr(model, "item_head", None), "weight", None)
    if output is not None and output is not embeddings.weight:
        tables.append(output)
    residual = getattr(model, "item_output_residual", None)
    if isinstance(residual, nn.Embedding):
        tables.append(residual.weight)
    return tuple(tables)


def sparse_item_gradients_supported(model: nn.Module) -> str | None:
    """None when `enable_sparse_item_gradients` applies to `model`; otherwise why not, as a sentence."""
    embeddings = item_table(model)
    if embeddings is None:
        return "the model has no id embedding table"
    output = getattr(getattr(model, "item_head", None), "weight", None)
    if output is None or output.shape != embeddings.weight.shape:
        return "the output layer is not an item table of the id embeddings' shape"
    if getattr(getattr(model, "config", None), "loss_type", None) != "sampled_softmax":
        return "the full softmax reads every row of the table in every step"
    return None


def enable_sparse_item_gradients(model: nn.Module) -> tuple[nn.Parameter, ...]:
    """
    Makes the item tables' gradients sparse (the rows of the batch only), in place, for training with the sampled
    softmax. Returns the tables' weights (`item_tables`), the parameters with sparse gradients from then on: one with
    the output tied to the id embeddings, two with a separate output table.

    Raises:
        ValueError: where it does not apply (`sparse_item_gradients_supported` says why).
    """
    why_not = sparse_item_gradients_supported(model)
    if why_not is not None:
        raise ValueError(f"Sparse item-table gradients do not apply: {why_not}.")
    item_table(model).sparse = True
    residual = getattr(model, "item_output_residual", None)
    if isinstance(residual, nn.Embedding):  # read by row in the same steps; flagged too, so DDP expects it sparse
        residual.sparse = True
    return item_tables(model)


class LazyAdamW(torch.optim.AdamW):
    """
    `torch.optim.AdamW` for dense gradients; lazy AdamW for sparse ones (see the module's docstring). The state of a
    parameter with sparse gradients has AdamW's layout (`step`, `exp_avg`, `exp_avg_sq`), `step` counting the steps
    in which it had a gradient; bias corrections use it, as torch's `SparseAdam` does. `amsgrad`, `maximize` and
    complex parameters are not supported for sparse gradients.

    After each `step`, `last_rows[param]` holds `(rows, weights before the step)` of every parameter updated
    lazily, for `LazyRowEMA`.
    """

    def __init__(self, params, **kwargs):
        super().__init__(params, **kwargs)
        self.last_rows: dict[nn.Parameter, tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.last_rows = {}
        sparse = [
            (param, group)
            for group in self.param_groups
            for param in group["params"]
            if param.grad is not None and param.grad.is_sparse
        ]
        grads = [param.grad for param, _ in sparse]
        for param, _ in sparse:  # AdamW refuses sparse gradients: it steps the dense parameters only
            param.grad = None
        try:
            super().step()
        finally:
            for (param, _), grad in zip(sparse, grads, strict=True):
                param.grad = grad
        for param, group in sparse:
            self._lazy_step(param, group)
        return loss

    def _lazy_step(self, param: nn.Parameter, group: dict) -> None:
        if group["amsgrad"] or group["maximize"]:
            raise ValueError("LazyAdamW: amsgrad and maximize are not supported for sparse gradients.")
        grad = param.grad.coalesce()
        rows, values = grad.indices()[0], grad.values()
        state = self.state[param]
        if not state:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["step"] += 1
        step = state["step"].item()
        beta1, beta2 = group["betas"]
        lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
        before = param.index_select(0, rows)
        self.last_rows[param] = (rows, before)
        exp_avg = state["exp_avg"].index_select(0, rows).lerp_(values, 1 - beta1)
        exp_avg_sq = state["exp_avg_sq"].index_select(0, rows).mul_(beta2).addcmul_(values, values, value=1 - beta2)
        state["exp_avg"].index_copy_(0, rows, exp_avg)
        state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)
        denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2**step)).add_(eps)
        updated = before * (1 - lr * weight_decay)  # decoupled weight decay, of these rows only
        updated.addcdiv_(exp_avg, denom, value=-lr / (1 - beta1**step))
        param.index_copy_(0, rows, updated)


@torch.no_grad()
def clip_grad_norm_(parameters, max_norm: float) -> torch.Tensor:
    """
    `torch.nn.utils.clip_grad_norm_` (2-norm over all gradients together) where some gradients are sparse: a sparse
    gradient is coalesced in place (duplicate rows summed) and counted by its values. Returns the total norm.
    """
    grads = []
    for param in parameters:
        if param.grad is None:
            continue
        if param.grad.is_sparse:
            param.grad = param.grad.coalesce()
            grads.append(param.grad.values())
        else:
            grads.append(param.grad)
    if not grads:
        return torch.zeros(())
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    coefficient = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for grad in grads:
        grad.mul_(coefficient)
    return total


class LazyRowEMA:
    """
    Updates an `AveragedModel` built with `get_ema_multi_avg_fn(decay)` as its `update_parameters` would, with the
    item tables' rows updated only when `LazyAdamW` changes them (see the module's docstring). Call `update` after
    each optimizer step and `synchronize` before the average is read.

    Args:
        averaged: the `AveragedModel` (its `module` is what is evaluated and saved).
        model: the trained model, unwrapped.
        optimizer (`LazyAdamW`): the optimizer of `model`, unwrapped.
        tables (`nn.Parameter`, or a sequence of them): the parameters of `model` updated lazily.
        decay (`float`): the average's decay.
    """

    def __init__(self, averaged: AveragedModel, model: nn.Module, optimizer: LazyAdamW, tables, decay: float):
        self.averaged, self.optimizer, self.decay = averaged, optimizer, decay
        tables = (tables,) if isinstance(tables, torch.Tensor) else tuple(tables)
        averaged_by_name = dict(averaged.module.named_parameters())
        names = {id(param): name for name, param in model.named_parameters()}
        missing = [k for k, table in enumerate(tables) if id(table) not in names]
        if missing or not tables:
            raise ValueError("LazyRowEMA: every table must be a parameter of the model.")
        self.tables = [(table, averaged_by_name[names[id(table)]]) for table in tables]
        lazy = {id(table) for table in tables}
        self.pairs = [
            (averaged_param, param)
            for (name, param), averaged_param in zip(
                model.named_parameters(), averaged.module.parameters(), strict=True
            )
            if id(param) not in lazy
        ]
        self.buffers = list(zip(averaged.module.buffers(), model.buffers(), strict=True))
        self.steps = 0
        # the step up to which each row of each table is averaged
        self.synced = [torch.zeros(table.shape[0], dtype=torch.long, device=table.device) for table in tables]

    @torch.no_grad()
    def update(self) -> None:
        """One step of the average, after one optimizer step."""
        first = self.averaged.n_averaged.item() == 0  # the first update copies the weights, as AveragedModel's
        self.steps += 1
        averaged, current = [a for a, _ in self.pairs], [p.detach() for _, p in self.pairs]
        if first:
            torch._foreach_copy_(averaged, current)
        else:
            torch._foreach_lerp_(averaged, current, 1 - self.decay)
        for (table, averaged_table), synced in zip(self.tables, self.synced, strict=True):
            changed = self.optimizer.last_rows.get(table)
            if changed is None:
                continue
            rows, before = changed
            if first:
                row_average = table.index_select(0, rows)
            else:  # the steps in which the row stood still at `before`, then this step's update
                row_average = averaged_table.index_select(0, rows)
                idle = (self.steps - 1 - synced.index_select(0, rows)).to(row_average.dtype)
                row_average = before + self.decay ** idle[:, None] * (row_average - before)
                row_average.lerp_(table.index_select(0, rows), 1 - self.decay)
            averaged_table.index_copy_(0, rows, row_average)
            synced.index_fill_(0, rows, self.steps)
        for averaged_buffer, buffer in self.buffers:  # not averaged: kept equal to the model's, as AveragedModel does
            averaged_buffer.copy_(buffer)
        self.averaged.n_averaged += 1

    @torch.no_grad()
    def synchronize(self) -> None:
        """Brings every row of the averaged tables up to the last step: what the dense average would hold."""
        for (table, averaged_table), synced in zip(self.tables, self.synced, strict=True):
            idle = (self.steps - synced).to(table.dtype)
            if bool((idle > 0).any()):
                weights = table.detach()
                averaged_table.sub_(weights).mul_(self.decay ** idle[:, None]).add_(weights)
                synced.fill_(self.steps)
