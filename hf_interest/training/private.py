"""
User-level differentially private training: DP-SGD (opacus) with the user as the privacy unit.

What makes the guarantee user-level rather than event- or window-level:
- each user is one training row (`user_rows`: the newest `max_length + 1` events of their training sequence), so a
  user's whole contribution to a step is one row's gradient;
- every step draws its users by Poisson sampling (each user independently, with probability
  `per_device_train_batch_size / users`), which the accountant's subsampling amplification assumes;
- each user's gradient is clipped to `--dp_max_grad_norm` and Gaussian noise of `noise_multiplier x max_grad_norm` is
  added to their sum; a PRV (or RDP) accountant turns the noise, the sampling rate and the steps into (epsilon,
  delta).

Per-user gradients come from the per-user loss here (`per_user_loss`, the model needs not know it): the model scores
every position of every row, with the batch as the first dimension of every module's input and output, each row's
mean over its labelled positions is that user's loss, and the mean over users is what opacus's
`loss_reduction="mean"` expects. Tied input/output item vectors are one parameter used by two modules; opacus sums the two per-row parts.
The long-term query is a parameter of `LongShortTermInterest` itself; the per-row gradient of it is computed here
(`long_short_term_grad_sample`), registered with opacus, and tested against per-row autograd.

Not covered by the guarantee, and said so in the run's results: the vocabulary (the catalogue is treated as public),
the per-epoch validation numbers (printed, never used to choose the weights: a private run keeps its last epoch),
and the test numbers (a report on the users' held-out events).
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F

from ..modeling_interest import LongShortTermInterest

# Said once in the run's own words (the noise generator) or harmless here (embeddings' integer inputs need no gradient;
# the PRV accountant's RDP starting point).
QUIET_WARNINGS = (
    "Secure RNG turned off",
    "Full backward hook is firing when gradients are computed with respect to module outputs",
    "Optimal order is the largest alpha",
)
DP_INSTALL_HINT = "DP-SGD needs opacus: pip install 'hf-interest[privacy]' (or pip install 'opacus>=1.5')."


def _opacus():
    try:
        import opacus
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(DP_INSTALL_HINT) from error
    return opacus


def long_short_term_grad_sample(module: LongShortTermInterest, activations, backprops: torch.Tensor) -> dict:
    """
    Per-row gradient of the long-term query, the one parameter `LongShortTermInterest` holds itself (its projections
    and gate are `nn.Linear` children with opacus's own per-row rules).

    The query enters only the long-term part l_t (and, through l_t, the gate). The parts that do not depend on it
    (keys, values, the short-term part) are recomputed without autograd, which also keeps the children's per-row
    hooks quiet; l_t is recomputed from one copy of the query per row, and the gradient of `<combined, backprops>`
    with respect to those copies is each row's gradient.

    Args:
        module: the `LongShortTermInterest` module.
        activations: its forward inputs `(causal_states, items, attention_mask)`.
        backprops: the gradient of the loss with respect to its first output (the combined state), `(B, T, H)`.

    Returns:
        `{module.long_term_query: (B, H)}`.
    """
    causal_states, items, attention_mask = activations
    batch_size, kept = items.shape[0], causal_states.shape[1]
    real = attention_mask.bool()
    with torch.no_grad():
        key = module.split_heads(module.long_term_key(items))
        value = module.split_heads(module.long_term_value(items))
        short_term = (
            module.short_term_part(causal_states, items, real) if hasattr(module, "short_term_query") else None
        )
    queries = module.long_term_query.detach().expand(batch_size, -1).clone().requires_grad_(True)
    with torch.enable_grad():
        long_term = module.long_term_average(key, value, queries, real)[:, -kept:]
        if module.interest_gate is not None:  # combined = h + g l + (1 - g) s, with g reading l
            gate = module.interest_gate
            mixed = torch.cat([causal_states, long_term, short_term], dim=-1)
            g = torch.sigmoid(F.linear(mixed, gate.weight.detach(), gate.bias.detach()))
            part = g * long_term + (1.0 - g) * short_term
        else:  # combined = h + l
            part = long_term
        (grad,) = torch.autograd.grad(part, queries, grad_outputs=backprops.to(part.dtype))
    return {module.long_term_query: grad}


def register_grad_samplers() -> None:
    """Registers `long_short_term_grad_sample` with opacus (idempotent)."""
    from opacus.grad_sample import GradSampleModule
    from opacus.grad_sample.utils import register_grad_sampler

    if GradSampleModule.GRAD_SAMPLERS.get(LongShortTermInterest) is not long_short_term_grad_sample:
        register_grad_sampler(LongShortTermInterest)(long_short_term_grad_sample)


def per_user_loss(model, module, batch: dict) -> torch.Tensor:
    """
    The loss DP-SGD trains on: each user's (row's) mean cross-entropy over their labelled positions, then the mean over
    users, a user without a label counting zero. Every position of every row is scored through `module` (the model,
    or opacus's wrapper of it), so each row's part of every gradient is separable, as per-sample gradients need. The
    same exclusions as the model's own loss: special tokens never, and with `config.loss_exclude_seen` the history's
    items up to each position, a position whose target is among them left out of the loss.

    Args:
        model: the `InterestForNextItemPrediction` model (its config, `seen_before`, `target_seen_before` and
            `masked_cross_entropy`).
        module: what runs the forward pass: `model` or its wrapper.
        batch (`dict`): `input_ids`, `attention_mask`, `timestamps` (optional) and `labels`, all `(B, T)`.
    """
    config = model.config
    labels = batch["labels"]
    inputs = {name: value for name, value in batch.items() if name != "labels"}
    logits = module(**inputs).logits.float()  # (B, T, N): without labels, every position is scored
    batch_size, seq_len = labels.shape
    labelled = labels >= config.num_special_tokens  # -100 and special tokens are never targets
    excluded = torch.arange(config.num_items, device=logits.device) < config.num_special_tokens
    excluded = excluded.expand(batch_size, seq_len, -1)
    if config.loss_exclude_seen:
        labelled = labelled & ~model.target_seen_before(batch["input_ids"], labels)
        rows, positions = torch.meshgrid(
            torch.arange(batch_size, device=labels.device), torch.arange(seq_len, device=labels.device), indexing="ij"
        )
        seen = model.seen_before(batch["input_ids"], rows.flatten(), positions.flatten())
        excluded = seen.view(batch_size, seq_len, -1) | excluded
    # unlabelled positions: index 0, kept out of the mask so their loss, masked out below, stays finite
    targets = labels.masked_fill(~labelled, 0)
    excluded = excluded.scatter(2, targets[..., None], False)
    losses = model.masked_cross_entropy(logits.flatten(0, 1), targets.flatten(), excluded.flatten(0, 1))
    losses = losses.view(batch_size, seq_len).masked_fill(~labelled, 0.0)
    return (losses.sum(dim=1) / labelled.sum(dim=1).clamp(min=1)).mean()


def check_private_model(model) -> None:
    """The model settings DP-SGD needs (also for an `--init_from` model, whose config is not the arguments')."""
    config = model.config
    problems = []
    if config.loss_type != "full_softmax":  # `per_user_loss` scores every item at every position
        problems.append(f"loss_type={config.loss_type!r} (the sampled softmax shares negatives across users)")
    if config.item_representation != "id":
        problems.append(f"item_representation={config.item_representation!r} (the text projection has no per-user "
                        "gradient)")  # fmt: skip
    if getattr(config, "item_output_residual", False):
        problems.append("item_output_residual=True (its per-user gradients are not computed)")
    if getattr(config, "item_score_temperature", 0.0):
        problems.append(f"item_score_temperature={config.item_score_temperature} (the output rows are normalised "
                        "outside the module whose per-user gradients are computed)")  # fmt: skip
    if getattr(config, "item_transition_prior", False):
        problems.append("item_transition_prior=True (its counts of all users' pairs are not private)")
    if getattr(config, "item_id_dropout", 0.0):
        problems.append(f"item_id_dropout={config.item_id_dropout} (drawn for the whole catalogue)")
    if problems:
        raise ValueError("DP-SGD cannot train this model: " + "; ".join(problems) + ".")


class PrivateTraining:
    """
    The DP-SGD parts of a run: `attach` wraps the model (per-row gradients), the optimizer (clipping and noise) and
    the training rows (Poisson sampling of users); `report` says what was spent.

    Args:
        train_args: the run's `TrainArguments` (`dp_*` fields, seed, epochs, max_steps).
        num_users (`int`): training rows, one per user.
        log: a print function.
    """

    def __init__(self, train_args, num_users: int, log=print):
        self.opacus = _opacus()
        register_grad_samplers()
        for message in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        self.args, self.num_users, self.log = train_args, num_users, log
        self.delta = train_args.dp_delta if train_args.dp_delta is not None else 1.0 / num_users
        self.engine = self.opacus.PrivacyEngine(accountant=train_args.dp_accountant)
        self.noise_multiplier = None
        self.sample_rate = None

    def attach(self, model, optimizer, train_loader):
        """`(module, optimizer, loader)` made private; `module` is opacus's wrapper of `model` (same parameters)."""
        check_private_model(model)
        args = self.args
        noise_generator = torch.Generator().manual_seed(args.seed + 1)
        sampling_generator = torch.Generator().manual_seed(args.seed + 2)
        common = {
            "module": model,
            "optimizer": optimizer,
            "data_loader": train_loader,
            "max_grad_norm": args.dp_max_grad_norm,
            "poisson_sampling": True,
            "loss_reduction": "mean",
            "noise_generator": noise_generator,
        }
        if args.dp_epsilon is not None:
            module, optimizer, loader = self.engine.make_private_with_epsilon(
                **common, target_epsilon=args.dp_epsilon, target_delta=self.delta, epochs=self._epochs(train_loader)
            )
        else:
            module, optimizer, loader = self.engine.make_private(**common, noise_multiplier=args.dp_noise_multiplier)
        loader = type(loader).from_data_loader(train_loader, generator=sampling_generator)
        self.noise_multiplier = optimizer.noise_multiplier
        self.sample_rate = loader.sample_rate
        self.log(
            f"DP-SGD (user level): {self.num_users:,} users, one row each, Poisson-sampled at rate "
            f"{self.sample_rate:.4f} (expected {self.sample_rate * self.num_users:.1f} users per step), per-user "
            f"gradients clipped to {args.dp_max_grad_norm:g}, noise multiplier {self.noise_multiplier:.4f}, "
            f"delta {self.delta:.3g}, {args.dp_accountant.upper()} accountant"
            + (f", target epsilon {args.dp_epsilon:g}" if args.dp_epsilon is not None else "")
        )
        self.model, self.module, self.optimizer = model, module, optimizer
        return module, optimizer, loader

    def loss(self, batch: dict) -> torch.Tensor:
        """The step's loss: `per_user_loss` through opacus's wrapper."""
        return per_user_loss(self.model, self.module, batch)

    def _epochs(self, train_loader) -> int:
        """Epochs the budget is spread over: `--num_train_epochs`, or fewer when `--max_steps` stops earlier."""
        epochs = self.args.num_train_epochs
        if self.args.max_steps is not None:
            epochs = min(epochs, max(1, math.ceil(self.args.max_steps / len(train_loader))))
        return epochs

    def empty_step(self) -> None:
        """A step whose Poisson draw sampled no user: the noise alone, as the analysis assumes."""
        for parameter in self.module.parameters():
            if parameter.requires_grad:
                parameter.grad_sample = parameter.new_zeros((0, *parameter.shape))

    def steps(self) -> int:
        """Noisy steps taken so far (the accountant's history: (noise, sample rate, steps) groups)."""
        return sum(int(group[-1]) for group in self.engine.accountant.history)

    def epsilon(self) -> float:
        """The epsilon spent so far at `self.delta`."""
        return float(self.engine.get_epsilon(self.delta)) if self.steps() else 0.0

    def report(self) -> dict:
        """What `eval_results.json`, the card and `hf-interest info` say about the guarantee."""
        return {
            "unit": "user",
            "epsilon": self.epsilon(),
            "delta": self.delta,
            "target_epsilon": self.args.dp_epsilon,
            "noise_multiplier": self.noise_multiplier,
            "max_grad_norm": self.args.dp_max_grad_norm,
            "sample_rate": self.sample_rate,
            "users": self.num_users,
            "steps": self.steps(),
            "accountant": self.args.dp_accountant,
            "rows_per_user": 1,
            "weights_kept": "last epoch (validation is reported, never used to choose the weights)",
            "not_covered": [
                "the item vocabulary (the catalogue is treated as public)",
                "the validation and test numbers reported beside the model",
                "the noise comes from torch's seeded generator (reproducible runs), not opacus's secure_mode",
            ],
        }
