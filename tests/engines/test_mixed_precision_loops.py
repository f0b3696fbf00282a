"""``amp`` in the clustering loops (contrastive autoencoder, DVC, plain autoencoder): the networks run under
bfloat16 autocast on a CPU that has it, the losses stay float32 and finite, and ``amp`` is checked up front."""

from __future__ import annotations

import pytest
import torch

from monai_cluster.engines import train_cae, train_dvc
from monai_cluster.engines.cae_trainer import train_autoencoder
from monai_cluster.networks import ContrastiveAutoEncoder, DeepVariationalClustering
from monai_cluster.utils import precision


@pytest.fixture
def bf16_cpu(monkeypatch):
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)


def _images(n: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 16, 16, generator=g)


def _record(model):
    seen: list[bool] = []
    model.register_forward_pre_hook(lambda m, i: seen.append(torch.is_autocast_enabled("cpu")))
    return seen


def test_cae_both_phases_under_autocast(bf16_cpu):
    model = ContrastiveAutoEncoder(2, 1, (16, 16), latent_dim=4, channels=(4, 8), strides=(2, 2), proj_dim=4,
                                   num_prototypes=2)  # fmt: skip
    seen = _record(model)
    before = [p.detach().clone() for p in model.parameters()]
    result = train_cae(model, _images(), epochs=2, batch_size=4, prototype_epochs=1, progress=False, amp=True)
    assert seen and all(seen)  # every training forward ran under autocast (the whole-dataset passes do not hook)
    for key in ("loss", "prototype_loss"):
        assert all(torch.isfinite(torch.tensor(result.history[key])))
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_cae_without_amp_runs_float32(bf16_cpu):
    model = ContrastiveAutoEncoder(2, 1, (16, 16), latent_dim=4, channels=(4,), strides=(2,), proj_dim=4)
    seen = _record(model)
    train_cae(model, _images(), epochs=1, batch_size=4, progress=False)
    assert seen and not any(seen)


def test_dvc_and_autoencoder_under_autocast(bf16_cpu):
    dvc = DeepVariationalClustering(2, (1, 16, 16), latent_dim=4, num_clusters=2, channels=(4,), strides=(2,))
    seen = _record(dvc)
    result = train_dvc(dvc, _images(), pretrain_epochs=1, cluster_epochs=1, batch_size=4, progress=False, amp=True)
    assert seen and any(seen)
    assert all(torch.isfinite(torch.tensor(result.history["loss"] + result.history["pretrain_loss"])))
    ae = ContrastiveAutoEncoder(2, 1, (16, 16), latent_dim=4, channels=(4,), strides=(2,), proj_dim=4)
    calls: list[bool] = []
    ae.to_latent.register_forward_pre_hook(lambda m, i: calls.append(torch.is_autocast_enabled("cpu")))
    history = train_autoencoder(ae, _images(), epochs=1, batch_size=4, progress=False, amp=True).history
    assert calls and all(calls) and all(torch.isfinite(torch.tensor(history["loss"])))


@pytest.mark.parametrize("fn", ["cae", "dvc", "autoencoder"])
def test_amp_must_be_bool(fn):
    with pytest.raises(TypeError, match="amp must be a bool"):
        if fn == "cae":
            train_cae(ContrastiveAutoEncoder(2, 1, (16, 16), latent_dim=4, channels=(4,), strides=(2,)), _images(),
                      epochs=1, batch_size=4, progress=False, amp="yes")  # fmt: skip
        elif fn == "dvc":
            train_dvc(DeepVariationalClustering(2, (1, 16, 16), latent_dim=4, num_clusters=2, channels=(4,),
                                                strides=(2,)), _images(), pretrain_epochs=1, cluster_epochs=1,
                      batch_size=4, progress=False, amp=1)  # fmt: skip
        else:
            train_autoencoder(ContrastiveAutoEncoder(2, 1, (16, 16), latent_dim=4, channels=(4,), strides=(2,)),
                              _images(), epochs=1, batch_size=4, progress=False, amp=None)  # fmt: skip
