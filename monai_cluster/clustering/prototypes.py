"""Prototype clustering of latent codes (Ferrante et al.'s contrastive autoencoder), in pure torch functions.

The prototypes ``B`` ``(K, D)`` live in the latent space of the codes ``z`` ``(N, D)``. A code's similarity to
prototype ``k`` is the dot product ``s_ik = z_i . b_k / T`` and its soft assignment is ``p_i = softmax_k(s_i)``;
its cluster is ``argmax_k s_ik`` (independent of ``T``). A prototype moves to the mean of the codes

- weighted by their soft assignments (``assignment="soft"``): the temperature sets how far codes near other
  prototypes pull it (small ``T``: towards the hard mean of its own codes; large ``T``: towards the global mean);
- of the codes whose argmax it is (``assignment="hard"``, the authors' released update; ``T`` plays no part).

A prototype that receives no mass keeps its place. The authors apply the update to every training batch in their
second training phase (:func:`monai_cluster.engines.train_cae` with ``prototype_epochs``) and read the clusters as
the argmax; :func:`monai_cluster.engines.cluster_cae` applies it to the whole dataset until the labels settle.

References:
    - [0] Contrastive autoencoder (VAESIM / AESIMCLR), Ferrante et al., NLDL 2023, https://arxiv.org/abs/2209.12005
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from monai_cluster.utils.validation import check_choice, check_positive_float, check_tensor

__all__ = ["PROTOTYPE_ASSIGNMENTS", "prototype_assignment", "prototype_means"]

PROTOTYPE_ASSIGNMENTS = ("soft", "hard")
"""How codes weigh in a prototype's update: by their soft assignment, or only through their argmax."""


def _check(z: object, prototypes: object) -> tuple[torch.Tensor, torch.Tensor]:
    z = check_tensor(z, "z", ndim=2, floating=True)
    prototypes = check_tensor(prototypes, "prototypes", ndim=2, floating=True)
    if z.shape[1] != prototypes.shape[1]:
        raise ValueError(
            f"z (N, D) and prototypes (K, D) must share D, got {tuple(z.shape)} and {tuple(prototypes.shape)}."
        )
    return z, prototypes.to(z)


def prototype_assignment(z: torch.Tensor, prototypes: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Soft assignments ``softmax_k(z_i . b_k / temperature)`` ``(N, K)`` of codes ``z`` ``(N, D)`` to
    ``prototypes`` ``(K, D)``; differentiable in ``z`` (the prototypes are treated as they are given).

    Raises:
        ValueError/TypeError: for tensors of the wrong rank or sizes, or a non-positive temperature.
    """
    temperature = check_positive_float(temperature, "temperature")
    z, prototypes = _check(z, prototypes)
    return torch.softmax(z @ prototypes.t() / temperature, dim=1)


def prototype_means(
    z: torch.Tensor,
    prototypes: torch.Tensor,
    temperature: float = 1.0,
    assignment: str = "soft",
    all_reduce: bool = False,
) -> torch.Tensor:
    """The prototypes moved to the (soft- or hard-) assigned means of the codes ``z`` ``(N, D)``: ``(K, D)``.

    Args:
        z: latent codes (no gradient is kept: the update is a statistic, not a learned step).
        prototypes: current prototypes ``(K, D)``; rows without any assigned mass are returned unchanged.
        temperature: softmax temperature of the soft assignments (unused by ``"hard"``).
        assignment: ``"soft"`` or ``"hard"`` (see the module docstring).
        all_reduce: sum the weighted codes and masses over the ``torch.distributed`` ranks first, so that every
            rank gets the prototypes of the union of their batches (data-parallel training).

    Raises:
        ValueError/TypeError: for tensors of the wrong rank or sizes, a non-positive temperature, or an unknown
            ``assignment``.
    """
    assignment = check_choice(assignment, "assignment", PROTOTYPE_ASSIGNMENTS)
    z, prototypes = _check(z, prototypes)
    with torch.no_grad():
        if assignment == "soft":
            weights = prototype_assignment(z, prototypes, temperature)
        else:
            check_positive_float(temperature, "temperature")
            labels = (z @ prototypes.t()).argmax(1)
            weights = torch.nn.functional.one_hot(labels, prototypes.shape[0]).to(z)
        sums, mass = weights.t() @ z, weights.sum(0)
        if all_reduce and dist.is_available() and dist.is_initialized():
            dist.all_reduce(sums)
            dist.all_reduce(mass)
        return torch.where((mass > 0)[:, None], sums / mass.clamp_min(torch.finfo(z.dtype).tiny)[:, None], prototypes)
