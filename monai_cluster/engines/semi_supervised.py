"""Semi-supervised fine-tuning: a MONAI ``SupervisedTrainer`` that also learns from an unlabelled loader.

Each iteration takes one labelled batch from the trainer's data loader and one unlabelled batch from a second loader
(restarted at every epoch and cycled within it, so an epoch is as long as the labelled loader and a resumed run
draws the same unlabelled batches as an uninterrupted one), and trains the student with one of two methods; an
:class:`~monai_cluster.handlers.EMATeacherHandler` keeps the teacher (the EMA of the student) after every iteration.

- ``"mean_teacher"`` (FixMatch / UniMatch style, with an EMA teacher): the teacher sees the weak view of the
  unlabelled images (as the data pipeline gives them, geometric augmentation included) and the student the strong
  view (:class:`BatchIntensityPerturbation` of the same tensor: gamma, contrast and noise, so the geometry is shared
  and the pseudo-labels stay aligned). Loss: ``supervised(student(x_l), y_l) + w(t) * consistency(student(strong),
  softmax(teacher(weak)))`` with the confident pseudo-label loss
  :class:`~monai_cluster.losses.PseudoLabelConsistencyLoss` and ``w(t) = consistency_weight * sigmoid_rampup(t,
  rampup_length)`` (``t`` the iterations done). With ``strong_mix`` the strong views are also CutMixed in pairs
  (UniMatch's strong view: each unlabelled image with the next one of the batch, one box of ``copy_paste_fraction``
  per iteration) and the teacher's probabilities with the same box, so every pseudo-label stays on its pixel.
- ``"copy_paste"`` (BCP, Bai et al. CVPR 2023): the teacher's argmax pseudo-labels on the unlabelled images; a box
  of the labelled batch is pasted into the unlabelled one and the other way round with one mask
  (:class:`~monai_cluster.transforms.RandCopyPaste`); the supervised loss on both mixed batches with the mixed
  targets (labels where the voxel came from a labelled image, pseudo-labels elsewhere). Unlabelled samples are paired
  with the labelled ones in order, cycled when the unlabelled batch is smaller.

Randomness (the strong views and the boxes) comes from the ``self.R`` of those ``Randomizable`` objects, reseeded at
every iteration from ``(seed, iteration)``, so a resumed run makes the same draws without saving their states.

References:
    - [0] Mean teachers are better role models, Tarvainen & Valpola, NeurIPS 2017, https://arxiv.org/abs/1703.01780
    - [1] Revisiting weak-to-strong consistency in semi-supervised semantic segmentation (UniMatch), Yang et al.,
      CVPR 2023, https://arxiv.org/abs/2208.09910
    - [2] Bidirectional Copy-Paste for Semi-Supervised Medical Image Segmentation, Bai et al., CVPR 2023,
      https://arxiv.org/abs/2305.00673
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from ignite.engine import Events
from monai.data import MetaTensor
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.transforms import Randomizable
from monai.utils.enums import CommonKeys as Keys

from monai_cluster.handlers.ema_teacher import EMATeacherHandler
from monai_cluster.losses.consistency import PseudoLabelConsistencyLoss, sigmoid_rampup
from monai_cluster.transforms.copy_paste import RandCopyPaste
from monai_cluster.utils.validation import check_choice, check_spatial_tensor

__all__ = ["SEMI_SUPERVISED_METHODS", "BatchIntensityPerturbation", "SemiSupervisedTrainer", "iteration_seed"]

SEMI_SUPERVISED_METHODS = ("mean_teacher", "copy_paste")
"""The methods of :class:`SemiSupervisedTrainer`."""


def iteration_seed(seed: int, iteration: int) -> int:
    """A 32-bit seed for iteration ``iteration`` of a run seeded ``seed`` (``numpy.random.SeedSequence``)."""
    return int(np.random.SeedSequence([int(seed), int(iteration)]).generate_state(1)[0])


def _check_range(value: object, name: str, upper: float | None = None) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value >= 0
    if not ok or (upper is not None and value >= upper):
        bound = f" and < {upper}" if upper is not None else ""
        raise ValueError(f"{name} must be a finite number >= 0{bound}, got {value!r}.")
    return float(value)


class BatchIntensityPerturbation(Randomizable):
    """The strong view of a batch: per sample, a random gamma, contrast change and Gaussian noise.

    For each sample of ``x`` ``(B, C, *spatial)``, with parameters drawn from ``self.R``:

    1. gamma ``g ~ U(1 - gamma, 1 + gamma)`` on the sample's intensities min-max scaled to ``[0, 1]`` and scaled
       back (``x' = lo + (hi - lo) ((x - lo) / (hi - lo))^g``);
    2. contrast ``c ~ U(1 - contrast, 1 + contrast)`` about the sample mean (``x' = mean + c (x - mean)``);
    3. noise ``N(0, s^2)`` with ``s ~ U(0, noise_std)`` (noise drawn from a ``torch.Generator`` seeded from
       ``self.R``, on ``x``'s device).

    Geometry is untouched, so the strong view stays voxel-aligned with the weak one. Works in 2D and 3D; no gradient.

    Args:
        noise_std: the largest noise standard deviation (intensities are ``[0, 1]`` in the bundles), >= 0.
        contrast: half-width of the contrast factor's range, in ``[0, 1)``.
        gamma: half-width of the gamma's range, in ``[0, 1)``.
    """

    def __init__(self, noise_std: float = 0.1, contrast: float = 0.3, gamma: float = 0.3) -> None:
        self.noise_std = _check_range(noise_std, "noise_std")
        self.contrast = _check_range(contrast, "contrast", upper=1.0)
        self.gamma = _check_range(gamma, "gamma", upper=1.0)
        self._params: np.ndarray | None = None
        self._noise_seed = 0

    def randomize(self, data: Any = None) -> None:
        """Draw ``(gamma, contrast, noise std)`` for ``data`` samples (an int) and the noise seed."""
        n = int(data)
        self._params = np.stack(
            [
                self.R.uniform(1 - self.gamma, 1 + self.gamma, n),
                self.R.uniform(1 - self.contrast, 1 + self.contrast, n),
                self.R.uniform(0.0, self.noise_std, n),
            ],
            axis=1,
        )
        self._noise_seed = int(self.R.randint(0, 2**31 - 1))

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, randomize: bool = True) -> torch.Tensor:
        """The strong view of ``x`` ``(B, C, *spatial)`` (floating), same shape and dtype."""
        x = check_spatial_tensor(x, "x")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating tensor, got dtype {x.dtype}.")
        if randomize:
            self.randomize(x.shape[0])
        if self._params is None or len(self._params) != x.shape[0]:
            raise ValueError(f"no parameters drawn for a batch of {x.shape[0]}; call with randomize=True.")
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        p = torch.as_tensor(self._params, dtype=torch.float32, device=x.device)
        g, c, s = (p[:, i].reshape(shape) for i in range(3))
        v = x.float()
        axes = tuple(range(1, v.ndim))
        lo, hi = v.amin(dim=axes, keepdim=True), v.amax(dim=axes, keepdim=True)
        span = (hi - lo).clamp(min=1e-6)
        v = lo + span * ((v - lo) / span).clamp(0, 1).pow(g)
        mean = v.mean(dim=axes, keepdim=True)
        v = mean + c * (v - mean)
        gen = torch.Generator(device=x.device).manual_seed(self._noise_seed)
        v = v + s * torch.randn(v.shape, generator=gen, device=x.device, dtype=v.dtype)
        return v.to(x.dtype)


def _plain(x: Any) -> Any:
    return x.as_tensor() if isinstance(x, MetaTensor) else x


class SemiSupervisedTrainer(SupervisedTrainer):
    """``SupervisedTrainer`` with an unlabelled loader, an EMA teacher and a semi-supervised loss (module docstring).

    Args:
        device: where the networks run.
        max_epochs: epochs, each one pass over the labelled ``train_data_loader``.
        train_data_loader: labelled batches (``{"image", "label"}`` through ``prepare_batch``).
        unlabeled_data_loader: unlabelled batches, dicts with ``unlabeled_key``; its images must have the labelled
            images' channels and spatial shape.
        network: the student; ``(B, C_in, *spatial) -> (B, K, *spatial)`` logits.
        optimizer: optimiser of the student.
        loss_function: the supervised loss of logits against the labels (e.g. ``DiceCELoss(to_onehot_y=True,
            softmax=True)``); in ``"copy_paste"`` also applied to the mixed batches and mixed targets.
        method: ``"mean_teacher"`` or ``"copy_paste"``.
        teacher: an :class:`~monai_cluster.handlers.EMATeacherHandler` (e.g. the one a checkpointer saves), a
            teacher network, or ``None`` (a copy of the student).
        ema_decay: EMA decay of a handler built here.
        ema_warmup: warm-up of a handler built here.
        consistency_loss: ``(student_logits, teacher_probs) -> loss`` for ``"mean_teacher"``; ``None`` builds
            :class:`~monai_cluster.losses.PseudoLabelConsistencyLoss` with ``threshold`` and ``dice_weight``.
        threshold: confidence threshold of the pseudo-labels (``"mean_teacher"``).
        dice_weight: Dice weight of the consistency loss built here.
        consistency_weight: final weight of the consistency term.
        rampup_length: iterations of the sigmoid ramp-up of that weight (0: full weight at once).
        copy_paste_fraction: the box side as a fraction of each spatial side (``"copy_paste"``; BCP: 2/3).
        strong_view: ``Randomizable`` callable making the strong view of a batch; ``None`` is
            :class:`BatchIntensityPerturbation` with its defaults.
        strong_mix: ``"mean_teacher"``: CutMix the strong views in pairs (sample ``i`` with sample ``i + 1`` of the
            unlabelled batch, cyclically; one box of ``copy_paste_fraction`` drawn per iteration) and the teacher's
            probabilities with the same box. A batch of one image is mixed with itself, which changes nothing.
        unlabeled_key: key of the images in the unlabelled batches.
        seed: seed of the per-iteration draws (strong views, boxes).
        kwargs: everything else ``SupervisedTrainer`` takes (``inferer``, ``postprocessing``, ``key_train_metric``,
            ``train_handlers``, ``amp``, ...); ``accumulation_steps`` must be 1.

    Iteration output: ``image``, ``label``, ``pred`` (labelled batch in ``"mean_teacher"``; the mixed batches and
    their mixed targets in ``"copy_paste"``), ``loss``, ``loss_supervised``, ``loss_consistency`` and
    ``consistency_weight`` (``"mean_teacher"``), ``kept_fraction`` (fraction of unlabelled voxels whose pseudo-label
    passed the threshold; 1 in ``"copy_paste"``).

    Raises:
        ValueError: for an unknown method, an empty unlabelled loader, bad weights, or (during training) unlabelled
            images of another shape than the labelled ones.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        unlabeled_data_loader: Iterable,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: Callable,
        method: str = "mean_teacher",
        teacher: EMATeacherHandler | torch.nn.Module | None = None,
        ema_decay: float = 0.99,
        ema_warmup: bool = True,
        consistency_loss: Callable | None = None,
        threshold: float = 0.95,
        dice_weight: float = 0.0,
        consistency_weight: float = 1.0,
        rampup_length: int = 0,
        copy_paste_fraction: float | Sequence[float] = 2.0 / 3.0,
        strong_view: Callable | None = None,
        strong_mix: bool = False,
        unlabeled_key: str = "image",
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        self.method = check_choice(method, "method", SEMI_SUPERVISED_METHODS)
        if kwargs.get("accumulation_steps", 1) != 1:
            raise ValueError(f"SemiSupervisedTrainer takes accumulation_steps=1, got {kwargs['accumulation_steps']!r}.")
        if not isinstance(unlabeled_data_loader, Iterable):
            raise TypeError(f"unlabeled_data_loader must be iterable, got {type(unlabeled_data_loader).__name__}.")
        if hasattr(unlabeled_data_loader, "__len__") and len(unlabeled_data_loader) == 0:
            raise ValueError("unlabeled_data_loader holds no batch; semi-supervised training needs unlabelled images.")
        super().__init__(device, max_epochs, train_data_loader, network, optimizer, loss_function, **kwargs)
        self.unlabeled_data_loader = unlabeled_data_loader
        self.unlabeled_key = unlabeled_key
        self.consistency_weight = _check_range(consistency_weight, "consistency_weight")
        if isinstance(rampup_length, bool) or not isinstance(rampup_length, int) or rampup_length < 0:
            raise ValueError(f"rampup_length must be an integer >= 0 (iterations), got {rampup_length!r}.")
        self.rampup_length = rampup_length
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}.")
        self.seed = seed
        self.consistency_loss = (
            PseudoLabelConsistencyLoss(threshold, dice_weight) if consistency_loss is None else consistency_loss
        )
        if not callable(self.consistency_loss):
            raise TypeError(f"consistency_loss must be callable, got {type(self.consistency_loss).__name__}.")
        self.strong_view = BatchIntensityPerturbation() if strong_view is None else strong_view
        if not callable(self.strong_view):
            raise TypeError(f"strong_view must be callable, got {type(self.strong_view).__name__}.")
        if not isinstance(strong_mix, bool):
            raise TypeError(f"strong_mix must be a bool, got {type(strong_mix).__name__}.")
        self.strong_mix = strong_mix
        self.copy_paste_fraction = copy_paste_fraction
        self._mixers: dict[int, RandCopyPaste] = {}
        if self.method == "copy_paste" or strong_mix:  # check the fraction now rather than at the first iteration
            RandCopyPaste(2, copy_paste_fraction)
        if isinstance(teacher, EMATeacherHandler):
            self.ema = teacher
        else:
            self.ema = EMATeacherHandler(network, teacher, decay=ema_decay, warmup=ema_warmup)
        self.ema.attach(self)
        self._unlabeled_iter: Iterator | None = None
        self.add_event_handler(Events.EPOCH_STARTED, self._restart_unlabeled)

    @property
    def teacher(self) -> torch.nn.Module:
        """The EMA teacher network."""
        return self.ema.teacher

    def _restart_unlabeled(self, engine: Any = None) -> None:
        """At every epoch start: restart the unlabelled loader and give its sampler the epoch.

        A sampler with ``set_epoch`` (a ``DistributedSampler`` under several processes: each rank draws its own
        share of the unlabelled images) gets ``set_epoch(epoch)``, as ``SupervisedTrainer`` does for the labelled
        loader, so every epoch shuffles anew and a resumed run draws the same order.
        """
        self._unlabeled_iter = None
        sampler = getattr(self.unlabeled_data_loader, "sampler", None)
        if callable(getattr(sampler, "set_epoch", None)):
            sampler.set_epoch(self.state.epoch)

    def _next_unlabeled(self) -> torch.Tensor:
        for attempt in range(2):
            if self._unlabeled_iter is None:
                self._unlabeled_iter = iter(self.unlabeled_data_loader)
            try:
                batch = next(self._unlabeled_iter)
                break
            except StopIteration:
                self._unlabeled_iter = None
        else:
            raise ValueError("unlabeled_data_loader gave no batch; semi-supervised training needs unlabelled images.")
        if isinstance(batch, Mapping):
            if self.unlabeled_key not in batch:
                raise ValueError(f"the unlabelled batch has no {self.unlabeled_key!r} entry (it has {list(batch)}).")
            batch = batch[self.unlabeled_key]
        elif isinstance(batch, (list, tuple)):
            batch = batch[0]
        images = _plain(torch.as_tensor(batch))
        return images.to(self.state.device, non_blocking=self.non_blocking)

    def _mixer(self, spatial_dims: int) -> RandCopyPaste:
        if spatial_dims not in self._mixers:
            self._mixers[spatial_dims] = RandCopyPaste(spatial_dims, self.copy_paste_fraction)
        return self._mixers[spatial_dims]

    def _iteration(self, engine: SemiSupervisedTrainer, batchdata: dict[str, torch.Tensor]) -> dict:
        """One step: a labelled and an unlabelled batch, the method's loss, one optimiser step (EMA after it)."""
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        inputs, targets = batch[0], batch[1]
        args, kwargs = (batch[2], batch[3]) if len(batch) == 4 else ((), {})
        inputs, targets = _plain(inputs), _plain(targets)
        unlabeled = engine._next_unlabeled()
        if unlabeled.shape[1:] != inputs.shape[1:]:
            raise ValueError(
                f"unlabelled images {tuple(unlabeled.shape)} must have the channels and spatial shape of the "
                f"labelled ones {tuple(inputs.shape)} (check the unlabelled transforms)."
            )
        step_seed = iteration_seed(engine.seed, engine.state.iteration)
        engine.state.output = {Keys.IMAGE: inputs, Keys.LABEL: targets}
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)

        def _compute() -> torch.Tensor:
            with torch.no_grad():
                teacher_logits = engine.inferer(unlabeled, engine.teacher, *args, **kwargs)
                teacher_probs = torch.softmax(teacher_logits.float(), dim=1)
            if engine.method == "mean_teacher":
                return engine._mean_teacher(inputs, targets, unlabeled, teacher_probs, step_seed, args, kwargs)
            return engine._copy_paste(inputs, targets, unlabeled, teacher_probs, step_seed, args, kwargs)

        if engine.amp and engine.scaler is not None:
            with torch.autocast("cuda", **engine.amp_kwargs):
                loss = _compute()
            engine.scaler.scale(loss).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.scaler.step(engine.optimizer)
            engine.scaler.update()
        else:
            loss = _compute()
            loss.backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.optimizer.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output

    def _forward(self, x: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
        pred = self.inferer(x, self.network, *args, **kwargs)
        self.fire_event(IterationEvents.FORWARD_COMPLETED)
        return pred

    def _mean_teacher(self, inputs, targets, unlabeled, teacher_probs, step_seed, args, kwargs) -> torch.Tensor:
        if isinstance(self.strong_view, Randomizable):
            self.strong_view.set_random_state(step_seed)
        strong = self.strong_view(unlabeled)
        if self.strong_mix:
            partner = torch.roll(torch.arange(strong.shape[0], device=strong.device), -1)
            # its own stream: the box is not drawn from the numbers the strong view drew
            mixer = self._mixer(strong.ndim - 2).set_random_state((step_seed + 1) % 2**32)
            strong, _, teacher_probs, _ = mixer(strong, strong[partner], teacher_probs, teacher_probs[partner])
        pred = self._forward(torch.cat([inputs, strong]), args, kwargs)
        pred_l, pred_u = pred[: inputs.shape[0]], pred[inputs.shape[0] :]
        supervised = self.loss_function(pred_l, targets).mean()
        consistency = self.consistency_loss(pred_u, teacher_probs).mean()
        weight = self.consistency_weight * sigmoid_rampup(self.state.iteration - 1, self.rampup_length)
        loss = supervised + weight * consistency
        kept = getattr(self.consistency_loss, "last_kept_fraction", None)
        self.state.output.update(
            {
                Keys.PRED: pred_l,
                Keys.LOSS: loss,
                "loss_supervised": supervised.detach(),
                "loss_consistency": consistency.detach(),
                "consistency_weight": weight,
                "kept_fraction": float("nan") if kept is None else kept,
            }
        )
        self.fire_event(IterationEvents.LOSS_COMPLETED)
        return loss

    def _copy_paste(self, inputs, targets, unlabeled, teacher_probs, step_seed, args, kwargs) -> torch.Tensor:
        pseudo = teacher_probs.argmax(dim=1, keepdim=True).to(targets.dtype)
        if targets.shape[1] != 1:
            raise ValueError(
                f"copy_paste needs labels of class indices (B, 1, *spatial), got {tuple(targets.shape)}; "
                "pseudo-labels are class indices."
            )
        pair = torch.arange(inputs.shape[0], device=unlabeled.device) % unlabeled.shape[0]
        mixer = self._mixer(inputs.ndim - 2).set_random_state(step_seed)
        img_ab, img_ba, lab_ab, lab_ba = mixer(inputs, unlabeled[pair], targets, pseudo[pair])
        mixed, mixed_targets = torch.cat([img_ab, img_ba]), torch.cat([lab_ab, lab_ba])
        pred = self._forward(mixed, args, kwargs)
        loss = self.loss_function(pred, mixed_targets).mean()
        self.state.output.update(
            {
                Keys.IMAGE: mixed,
                Keys.LABEL: mixed_targets,
                Keys.PRED: pred,
                Keys.LOSS: loss,
                "loss_supervised": loss.detach(),
                "kept_fraction": 1.0,
            }
        )
        self.fire_event(IterationEvents.LOSS_COMPLETED)
        return loss
