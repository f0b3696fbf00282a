"""Exact resume of the image-clustering stages: a run killed after an epoch and resumed ends with the same weights."""

from __future__ import annotations

import pytest
import torch

from monai_cluster.engines import EpochCheckpoint, train_autoencoder, train_cae, train_dvc
from monai_cluster.networks.nets.contrastive_autoencoder import ContrastiveAutoEncoder
from monai_cluster.networks.nets.dvc import DeepVariationalClustering


class _Killed(Exception):
    pass


class KillingCheckpoint(EpochCheckpoint):
    """Saves like EpochCheckpoint, then 'kills' the run after ``after`` saves (over all stages)."""

    def __init__(self, directory, after: int, resume: bool = True) -> None:
        super().__init__(directory, resume)
        self.after, self.saves = after, 0

    def handler(self, *args, **kwargs):
        checkpointer = super().handler(*args, **kwargs)
        save = checkpointer.save

        def killing_save(engine):
            save(engine)
            self.saves += 1
            if self.saves == self.after:
                raise _Killed

        checkpointer.save = killing_save
        return checkpointer


def _cae(seed=0):
    torch.manual_seed(seed)
    return ContrastiveAutoEncoder(2, 1, (16, 16), latent_dim=4, channels=(4, 8), strides=(2, 2), proj_dim=8)


def _dvc(seed=0):
    torch.manual_seed(seed)
    return DeepVariationalClustering(2, (1, 16, 16), latent_dim=4, num_clusters=3, channels=(4, 8), strides=(2, 2))


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def _kill_and_resume(train, make, x, tmp_path, kill_after, **settings):
    """Train ``make()`` uninterrupted, then killed after ``kill_after`` saves and resumed into a differently
    initialised ``make(seed=3)``; return ``(whole, full result, resumed, resumed result)``."""
    whole = make()
    full = train(whole, x, **settings)
    with pytest.raises(_Killed):
        train(make(), x, checkpoint=KillingCheckpoint(tmp_path, after=kill_after), **settings)
    resumed = make(seed=3)
    out = train(resumed, x, checkpoint=EpochCheckpoint(tmp_path), **settings)
    return whole, full, resumed, out


@pytest.mark.parametrize("kind", ["cae", "autoencoder"])
def test_cae_and_autoencoder_resume_exactly_after_a_kill(tmp_path, blobs, kind):
    x, _ = blobs(n_per_class=6)
    train = train_cae if kind == "cae" else train_autoencoder
    whole = _cae()
    full = train(whole, x, epochs=4, batch_size=8, progress=False)
    killed = _cae()
    with pytest.raises(_Killed):
        train(killed, x, epochs=4, batch_size=8, progress=False, checkpoint=KillingCheckpoint(tmp_path, after=2))
    assert not _same(killed, whole)
    resumed = _cae(seed=5)  # another initialisation: everything must come from the checkpoint
    out = train(resumed, x, epochs=4, batch_size=8, progress=False, checkpoint=EpochCheckpoint(tmp_path))
    assert _same(resumed, whole)
    assert out.history["loss"] == pytest.approx(full.history["loss"])
    # more epochs on resume continue the stage; another learning rate is refused, naming it
    train(_cae(), x, epochs=5, batch_size=8, progress=False, checkpoint=EpochCheckpoint(tmp_path))
    with pytest.raises(ValueError, match=r"other settings \(lr: checkpoint 0.001, now 0.01\)"):
        train(_cae(), x, epochs=5, lr=0.01, batch_size=8, progress=False, checkpoint=EpochCheckpoint(tmp_path))
    with pytest.raises(ValueError, match="has 5 epochs done, more than the 3 asked for now"):
        train(_cae(), x, epochs=3, batch_size=8, progress=False, checkpoint=EpochCheckpoint(tmp_path))
    # resume=False starts afresh
    fresh = _cae()
    train(fresh, x, epochs=4, batch_size=8, progress=False, checkpoint=EpochCheckpoint(tmp_path, resume=False))
    assert _same(fresh, whole)


@pytest.mark.parametrize("kill_after", [1, 3])  # in the VAE pretraining, or in the clustering stage
def test_dvc_resumes_exactly_in_either_stage(tmp_path, blobs, kill_after):
    x, _ = blobs(n_per_class=6)
    settings = {"pretrain_epochs": 2, "cluster_epochs": 3, "batch_size": 8, "tol": 0.0, "update_interval": 2,
                "progress": False}  # fmt: skip
    whole, full, resumed, out = _kill_and_resume(train_dvc, _dvc, x, tmp_path, kill_after, **settings)
    assert _same(resumed, whole)
    assert (out.labels == full.labels).all() and out.history["loss"] == pytest.approx(full.history["loss"])
    assert out.history["refresh_epochs"] == full.history["refresh_epochs"]


def test_checkpoint_errors(tmp_path, blobs, caplog):
    with pytest.raises(TypeError, match="resume must be a bool"):
        EpochCheckpoint(tmp_path, resume="yes")
    ckpt = EpochCheckpoint(tmp_path)
    ckpt.path("cae").mkdir(parents=True)
    (ckpt.path("cae") / "checkpoint_epoch0001.pt").write_bytes(b"not a checkpoint")
    x, _ = blobs(n_per_class=6)
    model, reference = _cae(), _cae()
    train_cae(model, x, epochs=1, batch_size=8, progress=False, checkpoint=ckpt)  # a damaged file is skipped
    assert "could not be read" in caplog.text and ckpt.resumed_epochs == {}
    train_cae(reference, x, epochs=1, batch_size=8, progress=False)
    assert _same(model, reference)


@pytest.mark.parametrize("kill_after", [2, 4])  # in the contrastive phase, or in the prototype phase
def test_cae_prototype_phase_resumes_exactly(tmp_path, blobs, kill_after):
    x, _ = blobs(n_per_class=6)

    def model(seed=0):
        torch.manual_seed(seed)
        return ContrastiveAutoEncoder(2, 1, (16, 16), latent_dim=4, channels=(4, 8), strides=(2, 2), proj_dim=8,
                                      num_prototypes=3)  # fmt: skip

    settings = {"epochs": 3, "prototype_epochs": 3, "batch_size": 8, "progress": False}
    whole, full, resumed, out = _kill_and_resume(train_cae, model, x, tmp_path, kill_after, **settings)
    assert _same(resumed, whole) and torch.equal(resumed.prototypes, whole.prototypes)
    assert out.history["prototype_loss"] == pytest.approx(full.history["prototype_loss"])
    # one more contrastive epoch makes the saved prototype phase stale: it is trained again from the new weights
    longer = model()
    train_cae(longer, x, checkpoint=EpochCheckpoint(tmp_path), **{**settings, "epochs": 4})
    reference = model()
    train_cae(reference, x, **{**settings, "epochs": 4})
    assert _same(longer, reference)
