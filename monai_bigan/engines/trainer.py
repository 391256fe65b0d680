# Copyright (c) monai_bigan contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""
Adversarial trainer for BiGAN / EGBAD (Donahue et al., arXiv:1605.09782; Zenati et al., arXiv:1802.06222).

MONAI's ``GanTrainer`` has no encoder and its discriminator sees images only, so it cannot express the joint
discriminator D(x, z). ``BiGANTrainer`` follows ``AdversarialTrainer``'s layout instead: one discriminator step and
one joint encoder + generator step per batch, AMP with one gradient scaler per step, and an exponential moving average
of all the networks that validation and inference score with. ALAD's cycle-consistency discriminators D_xx and D_zz
(Zenati et al., arXiv:1812.02288) are trained too when the ``BiGAN`` holds them. The loss terms and their sums are
defined in one place, :py:class:`monai_bigan.losses.BiGANObjective`; the trainer runs the networks and steps the
optimizers.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import torch
from monai.engines.trainer import Trainer
from monai.engines.utils import default_metric_cmp_fn, default_prepare_batch
from monai.utils import IgniteInfo, min_version, optional_import
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from monai_bigan.exceptions import NonFiniteLossError
from monai_bigan.losses import BiGANObjective
from monai_bigan.networks import BiGAN
from monai_bigan.utils.checkpoint import find_checkpoints
from monai_bigan.utils.distributed import bigan_parts, get_world_size, sync_buffers, unwrap_bigan, unwrap_module
from monai_bigan.utils.ema import ema_decay_at, update_ema
from monai_bigan.utils.enums import BiGANIterationEvents, BiGANKeys

if TYPE_CHECKING:
    from ignite.engine import Engine, EventEnum
    from ignite.metrics import Metric
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Metric, _ = optional_import("ignite.metrics", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Metric")
    EventEnum, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "EventEnum")
Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["BiGANTrainer", "NonFiniteLossError"]


class BiGANTrainer(Trainer):
    """
    BiGAN training workflow, inherits from MONAI's ``Trainer`` (an Ignite ``Engine``).

    For each batch x of size m (the real batch size, so a short last batch is handled):

        1. z ~ N(0, I) of shape (m, latent_size); compute E(x) and G(z).
        2. Discriminator step: minimise ``loss_function.discriminator_loss(D, x, E(x), G(z), z)``, which detaches
           E(x) and G(z).
        3. Encoder + generator step: minimise ``loss_function.encoder_generator_loss(D, x, E(x), G(z), z, ...)``
           through the updated D, whose parameters are frozen for this step (and which is called unwrapped from DDP).
           With a reconstruction term (``recon_weight > 0``) G(E(x)) is computed here, unless D_xx needed it in step 1.
        4. Update the EMA copy ``ema_network`` (if given) with ``ema_decay``.

    The loss terms and how they add up are :py:class:`monai_bigan.losses.BiGANObjective`'s: the joint adversarial
    term, the weighted L1 reconstruction term of the encoder + generator step, and ALAD's terms below.

    ALAD (Zenati et al., "Adversarially Learned Anomaly Detection", arXiv:1812.02288, reference code
    ``alad/run.py``): when ``network.discriminator_xx`` (D_xx) and/or ``network.discriminator_zz`` (D_zz) are set,
    step 1 also computes the cycles G(E(x)) and/or E(G(z)), and the objective adds these terms:

        - discriminator step: ``d_xx_loss`` (D_xx on (x, x) against (x, G(E(x)))) and ``d_zz_loss`` (D_zz on (z, z)
          against (z, E(G(z)))), with G(E(x)) and E(G(z)) detached; ``d_loss`` is their sum with the joint term
          ``d_xz_loss``.
        - encoder + generator step: ``cycle_x_loss`` and ``cycle_z_loss``, the same pairs with flipped labels
          (ALAD's ``cost_x`` and ``cost_z``) and gradients through the cycles into E and G; D_xx and D_zz are frozen
          (and called unwrapped from DDP) as D is. ``eg_loss`` is their sum with the joint term ``eg_xz_loss`` (and
          the reconstruction term, which then reuses G(E(x))).

    The ``d_optimizer`` must then cover the parameters of all the discriminators
    (``network.discriminator_parameters()``), which is checked; the EMA copy (a deep copy of the whole ``BiGAN``)
    averages them as well.

    The standard Ignite events fire, so stock MONAI handlers (``StatsHandler``, ``TensorBoardStatsHandler``,
    ``CheckpointSaver``, ``ValidationHandler``, ...) work; the finer ``BiGANIterationEvents`` fire between steps.
    The output dictionary holds the keys of :py:class:`monai_bigan.utils.BiGANKeys`; losses are detached device
    tensors, so nothing forces a host sync unless a handler asks for a value.

    Args:
        device: device to train on, e.g. ``"cuda:0"`` or ``"cpu"``.
        max_epochs: number of epochs.
        train_data_loader: loader of healthy images; batches are dicts with ``image_key`` or plain tensors.
        network: the :py:class:`monai_bigan.networks.BiGAN` container (encoder, generator, discriminator). For
            multi-GPU training its three networks may each be wrapped in ``DistributedDataParallel``, see
            :py:func:`monai_bigan.utils.distributed.ddp_bigan`; the EMA is then taken over the unwrapped networks.
        eg_optimizer: optimizer over the encoder and generator parameters (one joint step).
        d_optimizer: optimizer over the discriminator parameters, those of ALAD's D_xx and D_zz included when they are
            set (``network.discriminator_parameters()``).
        loss_function: the training objective, a :py:class:`monai_bigan.losses.BiGANObjective`; ``None`` builds
            ``BiGANObjective(recon_weight=recon_weight)``. For compatibility, a bare adversarial loss such as
            ``BiGANLoss`` (called as ``loss_function(real_logits, fake_logits, for_discriminator=...)``) is still
            accepted, with a ``FutureWarning``, and becomes
            ``BiGANObjective(recon_weight=recon_weight, adversarial_loss=loss_function)``.
        ema_network: a copy of ``network`` updated as the exponential moving average of its weights; ``None``
            disables the EMA. It is kept in eval mode and never receives gradients.
        ema_decay: EMA decay (reference EGBAD/ALAD: 0.999).
        ema_warmup: use ``min(decay, (1 + n) / (10 + n))`` for the n-th update, so short runs average sensibly.
        recon_weight: weight of an explicit reconstruction term ``|x - G(E(x))|`` (L1, mean) added to the encoder +
            generator loss, as f-AnoGAN trains its encoder; 0 gives the plain BiGAN objective. Without it the encoder
            learns only through the discriminator and reconstructions stay poor for a long time. Kept for
            compatibility: it is folded into the default objective; with a ``BiGANObjective`` as ``loss_function``
            set ``BiGANObjective(recon_weight=...)`` instead and leave this at 0.
        epoch_length: number of iterations per epoch, default to ``len(train_data_loader)``.
        non_blocking: whether host-to-device copies may be asynchronous (use with pinned memory).
        prepare_batch: function returning ``(image, label)`` from a batch, see ``monai.engines.default_prepare_batch``.
        iteration_update: replaces the default iteration logic if given.
        postprocessing: transform applied to the output dictionary after each iteration.
        key_train_metric: Ignite metric computed on the training outputs, used to compare checkpoints.
        additional_metrics: more Ignite metrics.
        metric_cmp_fn: function comparing the key metric with the best one so far.
        train_handlers: handlers to attach, e.g. ``CheckpointSaver``, ``StatsHandler``, ``ValidationHandler``.
        amp: mixed precision on CUDA (``torch.autocast`` plus one ``GradScaler`` per step); ignored on CPU.
        amp_kwargs: arguments of ``torch.autocast``, e.g. ``{"dtype": torch.bfloat16}`` (bf16 needs no scaling, so
            the scalers are disabled for it).
        event_names: additional custom Ignite events to register.
        event_to_attr: mapping of those events to ``engine.state`` attributes.
        decollate: whether to decollate the batch after each iteration (off by default: nothing downstream needs it).
        to_kwargs: extra arguments of ``Tensor.to`` for ``prepare_batch``.
        optim_set_to_none: ``zero_grad(set_to_none=...)``, which saves memory.
        check_finite_every: every how many iterations the losses are checked for NaN/Inf (one host-device sync);
            they are also checked at the end of each epoch, before any handler (e.g. a ``CheckpointSaver``) runs.
            0 checks at the end of each epoch only. Between checks a device-side counter accumulates the non-finite
            steps without syncing.
        max_nonfinite_steps: number of non-finite steps tolerated before training stops with a
            :py:class:`NonFiniteLossError`. Under AMP with float16 the gradient scalers skip such steps, so a few are
            harmless; without scaling a non-finite step corrupts the weights, so keep the default 0.
        checkpoint_dir: folder of the epoch checkpoints, only used to name the last good one in the error message.

    Raises:
        TypeError: when ``network`` is not a ``BiGAN``.
        ValueError: when ``recon_weight``, ``check_finite_every`` or ``max_nonfinite_steps`` is negative, when both
            a ``BiGANObjective`` and a non-zero ``recon_weight`` are given, or when ``d_optimizer`` misses parameters
            of ``network.discriminator_xx`` or ``network.discriminator_zz``.
        NonFiniteLossError: from ``run()``, when more than ``max_nonfinite_steps`` steps had a non-finite loss.

    Example::

        net = BiGAN(Encoder(2, (1, 64, 64), 64), Generator(2, 64, (1, 64, 64)), JointDiscriminator(2, (1, 64, 64), 64))
        params = itertools.chain(net.encoder.parameters(), net.generator.parameters())
        trainer = BiGANTrainer(
            device="cpu", max_epochs=2, train_data_loader=loader, network=net,
            eg_optimizer=torch.optim.Adam(params, 2e-4, betas=(0.5, 0.999)),
            d_optimizer=torch.optim.Adam(net.discriminator.parameters(), 2e-4, betas=(0.5, 0.999)),
            loss_function=BiGANObjective(label_smoothing=0.1, recon_weight=10.0),
            ema_network=copy.deepcopy(net),
        )
        trainer.run()

        # ALAD: the same with D_xx and D_zz; one optimizer over all three discriminators
        net = BiGAN(
            Encoder(2, (1, 64, 64), 64), Generator(2, 64, (1, 64, 64)), JointDiscriminator(2, (1, 64, 64), 64),
            discriminator_xx=ImagePairDiscriminator(2, (1, 64, 64)), discriminator_zz=LatentPairDiscriminator(64),
        )
        d_optimizer = torch.optim.Adam(net.discriminator_parameters(), 2e-4, betas=(0.5, 0.999))
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        network: BiGAN,
        eg_optimizer: Optimizer,
        d_optimizer: Optimizer,
        loss_function: BiGANObjective | Callable[..., torch.Tensor] | None = None,
        ema_network: BiGAN | None = None,
        ema_decay: float = 0.999,
        ema_warmup: bool = True,
        recon_weight: float = 0.0,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        prepare_batch: Callable = default_prepare_batch,
        iteration_update: Callable[[Engine, Any], Any] | None = None,
        postprocessing: Callable | None = None,
        key_train_metric: dict[str, Metric] | None = None,
        additional_metrics: dict[str, Metric] | None = None,
        metric_cmp_fn: Callable = default_metric_cmp_fn,
        train_handlers: Sequence | None = None,
        amp: bool = False,
        amp_kwargs: dict | None = None,
        event_names: list[str | EventEnum | type[EventEnum]] | None = None,
        event_to_attr: dict | None = None,
        decollate: bool = False,
        to_kwargs: dict | None = None,
        optim_set_to_none: bool = True,
        check_finite_every: int = 10,
        max_nonfinite_steps: int = 0,
        checkpoint_dir: str | None = None,
    ) -> None:
        device = torch.device(device)
        # autocast and loss scaling only pay off on CUDA; on CPU the flag is ignored rather than slowing training
        amp = bool(amp) and device.type == "cuda"
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            iteration_update=iteration_update,
            postprocessing=postprocessing,
            key_metric=key_train_metric,
            additional_metrics=additional_metrics,
            metric_cmp_fn=metric_cmp_fn,
            handlers=None,  # attached below, after the non-finite loss check so that it runs first
            amp=amp,
            event_names=event_names,
            event_to_attr=event_to_attr,
            decollate=decollate,
            to_kwargs=to_kwargs,
            amp_kwargs=amp_kwargs,
        )
        if not isinstance(network, BiGAN):
            raise TypeError(f"network must be a monai_bigan.networks.BiGAN, got {type(network).__name__}.")
        self.register_events(*BiGANIterationEvents)
        self.network = network
        self.eg_optimizer = eg_optimizer
        self.d_optimizer = d_optimizer
        self.loss_function = self._objective(loss_function, recon_weight)
        self.ema_network = ema_network
        self.ema_decay = ema_decay
        self.ema_warmup = ema_warmup
        # the same modules without DDP wrappers (``network`` itself when none is wrapped), for the EMA
        self._plain_network = unwrap_bigan(network)
        # the DDP-wrapped networks, whose buffers are re-synchronized from rank 0 after each iteration
        self._ddp_networks = [m for m in bigan_parts(network).values() if unwrap_module(m) is not m]
        self._check_alad_optimizer(network, d_optimizer)
        if ema_network is not None:
            ema_decay_at(ema_decay, 0)  # validates the decay early
            ema_network.load_state_dict(self._plain_network.state_dict())
            ema_network.requires_grad_(False).eval()
        self.optim_set_to_none = optim_set_to_none
        # bf16 has the range of fp32, so it needs no loss scaling
        use_scaler = amp and self.amp_kwargs.get("dtype", torch.float16) == torch.float16
        self.d_scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
        self.eg_scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
        if check_finite_every < 0 or max_nonfinite_steps < 0:
            raise ValueError(
                f"check_finite_every and max_nonfinite_steps must be >= 0, got {check_finite_every} and "
                f"{max_nonfinite_steps}."
            )
        self.check_finite_every = int(check_finite_every)
        self.max_nonfinite_steps = int(max_nonfinite_steps)
        self.checkpoint_dir = checkpoint_dir
        # non-finite step counts on the device: [discriminator loss, encoder-generator loss, either, first iteration]
        self._nonfinite = torch.zeros(4, dtype=torch.int64, device=device)
        # registered before any other handler, so the check runs before checkpoints are written
        if self.check_finite_every > 0:
            self.add_event_handler(Events.ITERATION_COMPLETED(every=self.check_finite_every), self.check_finite)
        self.add_event_handler(Events.EPOCH_COMPLETED, self.check_finite)
        if train_handlers is not None:
            self._register_handlers(train_handlers)

    @staticmethod
    def _objective(
        loss_function: BiGANObjective | Callable[..., torch.Tensor] | None, recon_weight: float
    ) -> BiGANObjective:
        """The training objective from the ``loss_function`` and ``recon_weight`` arguments (see ``__init__``)."""
        if isinstance(loss_function, BiGANObjective):
            if recon_weight != 0:
                raise ValueError(
                    f"recon_weight={recon_weight} was given together with a BiGANObjective as loss_function; set the "
                    "weight on the objective, BiGANObjective(recon_weight=...), and leave the trainer's recon_weight "
                    "at 0."
                )
            return loss_function
        if loss_function is None:
            return BiGANObjective(recon_weight=recon_weight)
        warnings.warn(
            "passing an adversarial loss such as BiGANLoss as loss_function is deprecated; pass "
            "loss_function=BiGANObjective(label_smoothing=..., recon_weight=...) instead.",
            FutureWarning,
            stacklevel=3,
        )
        return BiGANObjective(recon_weight=recon_weight, adversarial_loss=loss_function)

    @staticmethod
    def _check_alad_optimizer(network: BiGAN, d_optimizer: Optimizer) -> None:
        """Raise a ``ValueError`` when ``d_optimizer`` misses trainable parameters of D_xx or D_zz."""
        groups = getattr(d_optimizer, "param_groups", None)
        if groups is None:
            return
        optimized = {id(p) for group in groups for p in group["params"]}
        for name in ("discriminator_xx", "discriminator_zz"):
            module = getattr(network, name, None)
            if module is None:
                continue
            if any(id(p) not in optimized for p in module.parameters() if p.requires_grad):
                raise ValueError(
                    f"d_optimizer does not hold all the parameters of network.{name}, which would then never be "
                    "trained; build it over network.discriminator_parameters()."
                )

    def run(self) -> None:  # type: ignore[override]
        """Run training; the scalers are created once in ``__init__`` so they can be checkpointed and resumed."""
        super(Trainer, self).run()

    def _autocast(self) -> Any:
        return torch.autocast(self.state.device.type, **self.amp_kwargs) if self.amp else nullcontext()

    def _iteration(self, engine: BiGANTrainer, batchdata: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """
        One BiGAN iteration: a discriminator step, then a joint encoder + generator step, then the EMA update.

        Returns:
            the dictionary described by :py:class:`monai_bigan.utils.BiGANKeys`.

        Raises:
            ValueError: when no batch data is given.
        """
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        reals = batch[0] if isinstance(batch, (tuple, list)) else batch
        net, objective = engine.network, engine.loss_function
        encoder, generator, discriminator = net.encoder, net.generator, net.discriminator
        # ALAD's optional cycle-consistency discriminators
        disc_xx, disc_zz = getattr(net, "discriminator_xx", None), getattr(net, "discriminator_zz", None)
        net.train()

        # the real batch size, so that a short last batch gets matching latent samples
        latents = torch.randn(reals.shape[0], net.latent_size, device=reals.device, dtype=reals.dtype)
        recons = cycle_latents = None
        with engine._autocast():
            enc_latents = encoder(reals)
            fakes = generator(latents)
            if disc_xx is not None:
                recons = generator(enc_latents)  # G(E(x)), also for the reconstruction term
            if disc_zz is not None:
                cycle_latents = encoder(fakes)  # E(G(z))
        engine.state.output = {
            BiGANKeys.REALS: reals,
            BiGANKeys.LATENTS: latents,
            BiGANKeys.ENC_LATENTS: enc_latents.detach(),
            BiGANKeys.FAKES: fakes.detach(),
        }
        engine.fire_event(BiGANIterationEvents.FORWARD_COMPLETED)

        # discriminator step; the objective detaches E(x), G(z), G(E(x)) and E(G(z)), so only the discriminators learn
        engine.d_optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        with engine._autocast():
            d_loss, d_terms, real_logits, fake_logits = objective.discriminator_loss(
                discriminator,
                reals,
                enc_latents,
                fakes,
                latents,
                discriminator_xx=disc_xx,
                recons=recons,
                discriminator_zz=disc_zz,
                cycle_latents=cycle_latents,
            )
        engine.d_scaler.scale(d_loss).backward()
        engine.d_scaler.step(engine.d_optimizer)
        engine.d_scaler.update()
        engine.state.output[BiGANKeys.REAL_LOGITS] = real_logits.detach()
        engine.state.output[BiGANKeys.FAKE_LOGITS] = fake_logits.detach()
        engine.state.output[BiGANKeys.D_LOSS] = d_loss.detach()
        engine.state.output.update({key: term.detach() for key, term in d_terms.items()})
        engine.fire_event(BiGANIterationEvents.DISCRIMINATOR_COMPLETED)

        # joint encoder + generator step through the updated discriminators, whose parameters get no gradient here; a
        # DDP-wrapped discriminator is called unwrapped, so that DDP expects no gradient reduction for it in this
        # backward pass
        engine.eg_optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        frozen = [d for d in (discriminator, disc_xx, disc_zz) if d is not None]
        for module in frozen:
            module.requires_grad_(False)
        try:
            with engine._autocast():
                if recons is None and objective.recon_weight > 0:
                    # G(E(x)) for the reconstruction term alone, only needed in this step; under autocast this
                    # context casts G's weights anew, so G's gradients from G(z) and G(E(x)) add up in float32
                    recons = generator(enc_latents)
                eg_loss, eg_terms, _, _ = objective.encoder_generator_loss(
                    unwrap_module(discriminator),
                    reals,
                    enc_latents,
                    fakes,
                    latents,
                    discriminator_xx=None if disc_xx is None else unwrap_module(disc_xx),
                    recons=recons,
                    discriminator_zz=None if disc_zz is None else unwrap_module(disc_zz),
                    cycle_latents=cycle_latents,
                )
            engine.eg_scaler.scale(eg_loss).backward()
        finally:
            for module in frozen:
                module.requires_grad_(True)
        engine.eg_scaler.step(engine.eg_optimizer)
        engine.eg_scaler.update()
        engine.state.output[BiGANKeys.EG_LOSS] = eg_loss.detach()
        engine.state.output.update({key: term.detach() for key, term in eg_terms.items()})  # eg_adv_loss, recon_loss
        engine.state.output[BiGANKeys.LOSS] = (d_loss + eg_loss).detach()
        engine._count_nonfinite(d_loss.detach(), eg_loss.detach())
        for module in engine._ddp_networks:  # rank 0's BatchNorm statistics everywhere, as DDP uses them
            sync_buffers(module)
        engine.fire_event(BiGANIterationEvents.ENCODER_GENERATOR_COMPLETED)

        if engine.ema_network is not None:
            decay = ema_decay_at(engine.ema_decay, engine.state.iteration - 1, engine.ema_warmup)
            update_ema(engine.ema_network, engine._plain_network, decay)
            engine.fire_event(BiGANIterationEvents.EMA_COMPLETED)
        return engine.state.output

    @torch.no_grad()
    def _count_nonfinite(self, d_loss: torch.Tensor, eg_loss: torch.Tensor) -> None:
        """Accumulate the non-finite steps on the device, without a host-device sync."""
        bad = ~torch.isfinite(torch.stack([d_loss.float().reshape(()), eg_loss.float().reshape(())]))
        any_bad = bad.any()
        counts = self._nonfinite
        counts[:2] += bad
        counts[2] += any_bad
        iteration = torch.full_like(counts[3], self.state.iteration)
        counts[3] = torch.where((counts[3] == 0) & any_bad, iteration, counts[3])

    def check_finite(self, engine: BiGANTrainer | None = None) -> None:
        """
        Raise :py:class:`NonFiniteLossError` when more than ``max_nonfinite_steps`` steps had a NaN or infinite loss
        (one host-device sync). Registered on ``ITERATION_COMPLETED(every=check_finite_every)`` and
        ``EPOCH_COMPLETED``. In distributed training the counts are summed over the ranks (one all-reduce), so that
        all ranks stop together.
        """
        counts = self._nonfinite
        if get_world_size() > 1:
            counts = counts.clone()
            torch.distributed.all_reduce(counts[:3])
            torch.distributed.all_reduce(counts[3:], op=torch.distributed.ReduceOp.MAX)  # some rank's first
        d_count, eg_count, steps, first = (int(v) for v in counts.tolist())
        if steps <= self.max_nonfinite_steps:
            return
        which = " and ".join(
            name for name, count in (("discriminator", d_count), ("encoder-generator", eg_count)) if count
        )
        last = "none was written"
        if self.checkpoint_dir is not None:
            found = find_checkpoints(self.checkpoint_dir)
            last = found[0][1] if found else f"none was written in {self.checkpoint_dir}"
        message = (
            f"non-finite {which} loss at iteration {first} (epoch {self.state.epoch}; {steps} non-finite step(s) by "
            f"iteration {self.state.iteration}, max_nonfinite_steps={self.max_nonfinite_steps}); training stopped "
            f"and no checkpoint was written after it. The last good checkpoint is {last}."
        )
        self.logger.error(message)
        raise NonFiniteLossError(message)

    def state_dict(self) -> dict[str, Any]:
        """Ignite's engine state (epoch, iteration, ...) plus both gradient scalers, for exact resumption."""
        state = dict(super().state_dict())
        state["d_scaler"] = self.d_scaler.state_dict()
        state["eg_scaler"] = self.eg_scaler.state_dict()
        return state

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Restore what :py:meth:`state_dict` saved; checkpoints without scaler states are accepted."""
        state = dict(state_dict)
        for name in ("d_scaler", "eg_scaler"):
            scaler_state = state.pop(name, None)
            if scaler_state:
                getattr(self, name).load_state_dict(scaler_state)
        super().load_state_dict(state)
