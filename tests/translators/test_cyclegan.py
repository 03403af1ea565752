"""cyclegan: training writes a resumable workdir, resume continues exactly, bf16 works, settings are checked."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from da_seg.checkpoints import load_checkpoint
from da_seg.errors import ConfigError, DataError
from da_seg.registry import TRANSLATORS
from da_seg.translators import load_translator
from da_seg.translators.cyclegan import CycleGAN

TINY = {"width": 4, "blocks": 1, "disc_width": 4, "disc_layers": 2, "iterations_per_epoch": 2}


def _weights(model: CycleGAN) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": v.clone() for n, net in model.networks.items() for k, v in net.state_dict().items()}


def test_workdir_contents(unpaired, tmp_path) -> None:
    source, target = unpaired
    model = TRANSLATORS.build({"name": "cyclegan", **TINY, "epochs": 3, "keep_checkpoints": 2, "sample_every": 2})
    model.fit(source, target, workdir=tmp_path, seed=1)
    assert sorted(p.name for p in tmp_path.glob("epoch_*")) == ["epoch_0002", "epoch_0003"]
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["epoch_0002.png", "epoch_0003.png"]
    grid = np.asarray(Image.open(tmp_path / "samples" / "epoch_0003.png"))
    assert grid.shape == (4 * 16, 3 * 16)  # 4 fixed slices x (MR | SynCT | reconstructed MR)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    epochs = [r for r in log if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    assert {"g", "adv", "cycle", "identity", "d", "d_a", "d_b", "lr", "it_per_s"} <= set(epochs[0])
    # decay_epochs defaults to epochs // 2 = 1: lr 2e-4 for epochs 1-2, then 2e-4 * (1 - 1/2)
    assert [r["lr"] for r in epochs] == pytest.approx([2e-4, 2e-4, 1e-4])
    snapshot = load_translator(tmp_path / "epoch_0002")
    assert isinstance(snapshot, CycleGAN) and snapshot.epoch == 2
    assert snapshot.translate(source[0]).shape == source[0].shape
    meta = json.loads((tmp_path / "last" / "meta.json").read_text())
    assert meta["component"] == "cyclegan" and meta["epoch"] == 3 and "torch" in meta["versions"]


def test_resume_continues_from_the_saved_epoch(unpaired, tmp_path) -> None:
    source, target = unpaired
    spec = {"name": "cyclegan", **TINY, "decay_epochs": 0, "identity_weight": 0.5, "pool_size": 1}
    straight = TRANSLATORS.build({**spec, "epochs": 3}).fit(source, target, seed=3)
    first = TRANSLATORS.build({**spec, "epochs": 2}).fit(source, target, workdir=tmp_path, seed=3)
    assert first.epoch == 2
    resumed = TRANSLATORS.build({**spec, "epochs": 3}).fit(source, target, workdir=tmp_path, seed=3)
    assert resumed.epoch == 3
    epochs = [json.loads(x)["epoch"] for x in (tmp_path / "log.jsonl").read_text().splitlines() if '"epoch"}' not in x]
    assert sorted(set(epochs)) == [1, 2, 3] and epochs.count(3) == epochs.count(1)  # epoch 3 trained once, after 2
    # Weights, optimizer moments, image pools and random streams all came back: the result equals a straight run.
    a, b = _weights(straight), _weights(resumed)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    # Nothing left to do: a second resume only loads.
    again = TRANSLATORS.build({**spec, "epochs": 3}).fit(source, target, workdir=tmp_path, seed=3)
    assert all(torch.equal(_weights(again)[k], b[k]) for k in b)


def test_resume_refuses_other_settings(unpaired, tmp_path) -> None:
    source, target = unpaired
    TRANSLATORS.build({"name": "cyclegan", **TINY, "epochs": 1}).fit(source, target, workdir=tmp_path)
    with pytest.raises(DataError, match=r"other settings.*width"):
        TRANSLATORS.build({"name": "cyclegan", **{**TINY, "width": 8}, "epochs": 2}).fit(
            source, target, workdir=tmp_path
        )


@pytest.mark.parametrize(
    "options",
    [
        {"generator": "unet", "unet_depth": 3, "cycle_loss": "ssim"},
        {"context": 1, "cycle_loss": {"mse": 1.0, "ssim": 1.0}, "identity_weight": 0.5},
        {"source_augment": [{"name": "random_ratio_crop"}, "rotation", "flip"], "target_augment": ["centre_crop"]},
        {"image_size": 12, "batch_size": 2, "cycle_loss": "l1"},
    ],
    ids=["unet-ssim", "context-weighted", "augment", "crop"],
)
def test_options_train_in_bf16(options, unpaired, tmp_path) -> None:
    source, target = unpaired
    tiny = {**TINY, "disc_layers": 1} if "image_size" in options else TINY
    model = TRANSLATORS.build({"name": "cyclegan", **tiny, "epochs": 1, **options})
    before = next(model.g_ab.parameters()).detach().clone()
    model.fit(source, target, workdir=tmp_path, precision="bf16", seed=0)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(v) for r in log for k, v in r.items() if isinstance(v, float))
    after = next(model.g_ab.parameters()).detach()
    assert not torch.equal(before, after) and after.dtype == torch.float32  # trained, master weights stay fp32
    out = model.translate(source[1])
    assert out.shape == source[1].shape and np.isfinite(out).all()


def test_too_small_for_the_discriminator(unpaired) -> None:
    source, target = unpaired
    with pytest.raises(ConfigError, match="too small for a PatchGAN"):
        TRANSLATORS.build({"name": "cyclegan", **TINY, "disc_layers": 3}).fit(source, target)


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="generator must be"):
        TRANSLATORS.build({"name": "cyclegan", "generator": "vit"})
    with pytest.raises(ConfigError, match="decay_epochs"):
        TRANSLATORS.build({"name": "cyclegan", "epochs": 2, "decay_epochs": 3})
    with pytest.raises(ConfigError, match="unknown loss 'ssmi'"):
        TRANSLATORS.build({"name": "cyclegan", "cycle_loss": "ssmi"})


def test_lr_schedule_constant_then_linear() -> None:
    model = CycleGAN(width=2, blocks=1, epochs=4, decay_epochs=2)
    assert [model.lr_factor(e) for e in range(4)] == pytest.approx([1, 1, 2 / 3, 1 / 3])


def test_save_keeps_only_generators(unpaired, tmp_path) -> None:
    source, target = unpaired
    model = TRANSLATORS.build({"name": "cyclegan", **TINY, "epochs": 1}).fit(source, target)
    model.save(tmp_path)
    fresh = CycleGAN(**{k: v for k, v in TINY.items() if k != "iterations_per_epoch"})
    load_checkpoint(tmp_path, {"g_ab": fresh.g_ab, "g_ba": fresh.g_ba}, component="cyclegan")
    with pytest.raises(DataError):
        load_checkpoint(tmp_path, {"d_a": fresh.d_a}, component="cyclegan")


def test_epoch_means_are_the_means_of_every_iterations_losses(unpaired, tmp_path) -> None:
    source, target = unpaired
    model = TRANSLATORS.build({"name": "cyclegan", **TINY, "iterations_per_epoch": 5, "epochs": 1, "log_every": 1})
    model.fit(source, target, workdir=tmp_path, seed=0)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    iterations = [r for r in log if r["kind"] == "iteration"]
    (epoch,) = [r for r in log if r["kind"] == "epoch"]
    assert [r["iteration"] for r in iterations] == [0, 1, 2, 3, 4]
    for key in ("g", "cycle", "d"):
        assert epoch[key] == pytest.approx(np.mean([r[key] for r in iterations]))


def test_a_non_finite_loss_stops_training_with_advice(unpaired, tmp_path) -> None:
    source, target = unpaired
    model = TRANSLATORS.build({"name": "cyclegan", **TINY, "epochs": 1, "log_every": 0})
    model.cycle = lambda rec, real: (rec - real).mean() * float("nan")
    with pytest.raises(DataError, match=r"a loss became non-finite .* lower lr or use precision fp32"):
        model.fit(source, target, workdir=tmp_path, seed=0)


def _iteration_losses(workdir) -> list[dict[str, float]]:
    rows = [json.loads(line) for line in (workdir / "log.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == "iteration"]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_compiled_whole_step_has_no_graph_break_and_matches_eager(unpaired, tmp_path, precision) -> None:
    """``compile`` traces the whole step (both updates, pools, Adam) as one graph: ``fullgraph=True`` turns any
    graph break into an error. aot_eager runs the traced graph with eager kernels, so losses match eager ones."""
    import torch._dynamo

    source, target = unpaired
    spec = {
        "name": "cyclegan",
        **TINY,
        "iterations_per_epoch": 3,
        "epochs": 2,
        "cycle_loss": "ssim",
        "identity_weight": 0.5,
        "pool_size": 4,  # fills in the first two steps, then mixes old fakes in
        "batch_size": 2,
        "log_every": 1,
        "sample_every": 0,
    }
    eager = TRANSLATORS.build(spec).fit(source, target, workdir=tmp_path / "eager", seed=2, precision=precision)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = TRANSLATORS.build(spec).fit(
        source, target, workdir=tmp_path / "compiled", seed=2, precision=precision, compile="aot_eager"
    )
    assert not torch._dynamo.utils.counters["graph_break"]
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1  # one graph for every step of both epochs
    tol = 1e-4 if precision == "fp32" else 2e-2
    for a, b in zip(_iteration_losses(tmp_path / "eager"), _iteration_losses(tmp_path / "compiled"), strict=True):
        assert a.keys() == b.keys()
        assert all(b[k] == pytest.approx(a[k], rel=tol, abs=tol) for k in a if k not in ("kind", "epoch", "iteration"))
    a, b = _weights(eager), _weights(compiled)
    assert all(torch.allclose(a[k], b[k], atol=50 * tol) for k in a)


@pytest.mark.parametrize(("target_augment", "calls"), [(["flip"], 1), (["rotation"], 2)])
def test_both_domains_are_augmented_in_one_call_when_their_augmentations_match(
    unpaired, monkeypatch, target_augment, calls
) -> None:
    from da_seg.augment import Augmentation

    seen = []
    original = Augmentation.__call__

    def spy(self, images, masks=None, crop=None):
        seen.append((len(images), crop))
        return original(self, images, masks, crop)

    monkeypatch.setattr(Augmentation, "__call__", spy)
    source, target = unpaired
    spec = {"name": "cyclegan", **TINY, "disc_layers": 1, "iterations_per_epoch": 1, "epochs": 1, "batch_size": 2}
    model = TRANSLATORS.build({**spec, "source_augment": ["flip"], "target_augment": target_augment, "image_size": 12})
    model.fit(source, target)
    assert seen == ([(4, 12)] if calls == 1 else [(2, 12), (2, 12)])  # the crop rides along in the same call


def test_ema_translates_and_saves_the_generators_weight_average(unpaired, tmp_path) -> None:
    source, target = unpaired
    spec = {"name": "cyclegan", **TINY, "epochs": 2, "ema": 0.9}
    model = TRANSLATORS.build(spec).fit(source, target, workdir=tmp_path, seed=2)
    average, last = model.averages["g_ab"].module, model.networks["g_ab"]
    assert set(model.averages) == {"g_ab", "g_ba"}
    assert not torch.equal(next(average.parameters()), next(last.parameters()))  # an average, not the last weights
    stack = torch.as_tensor(source[0][:2, None])
    assert torch.equal(model.translate_slices(stack), average(stack).float().clamp(-1, 1))
    model.save(tmp_path / "model")
    for folder in (tmp_path / "model", tmp_path / "epoch_0002"):  # the final model and the snapshots translate alike
        loaded = load_translator(folder)
        saved, averaged = loaded.g_ab.state_dict(), average.state_dict()
        assert saved.keys() == averaged.keys() and all(torch.equal(saved[k], averaged[k]) for k in saved)
        assert np.array_equal(loaded.translate(source[0]), model.translate(source[0]))


def test_ema_resumes_its_average_exactly(unpaired, tmp_path) -> None:
    source, target = unpaired
    spec = {"name": "cyclegan", **TINY, "decay_epochs": 0, "ema": 0.8}
    straight = TRANSLATORS.build({**spec, "epochs": 3}).fit(source, target, seed=4)
    TRANSLATORS.build({**spec, "epochs": 2}).fit(source, target, workdir=tmp_path, seed=4)  # killed after epoch 2
    resumed = TRANSLATORS.build({**spec, "epochs": 3}).fit(source, target, workdir=tmp_path, seed=4)
    for name in ("g_ab", "g_ba"):
        a, b = straight.averages[name].module.state_dict(), resumed.averages[name].module.state_dict()
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    with pytest.raises(DataError, match=r"other settings.*ema"):  # an average cannot start halfway
        TRANSLATORS.build({**spec, "ema": None, "epochs": 4}).fit(source, target, workdir=tmp_path, seed=4)


def test_ema_outside_zero_one_is_a_config_error() -> None:
    for decay in (0.0, 1.0, 1.5):
        with pytest.raises(ConfigError, match="ema must lie in"):
            TRANSLATORS.build({"name": "cyclegan", "ema": decay})


def test_tta_flip_translates_as_the_mean_with_the_mirrored_translation(unpaired, tmp_path) -> None:
    source, target = unpaired
    spec = {"name": "cyclegan", **TINY, "epochs": 1, "context": 1, "source_augment": ["flip"]}
    plain = TRANSLATORS.build(spec).fit(source, target, seed=5)
    flipped = TRANSLATORS.build({**spec, "tta_flip": True}).fit(source, target, seed=5)
    a, b = _weights(plain), _weights(flipped)
    assert all(torch.equal(a[k], b[k]) for k in a)  # the option leaves training alone: same weights to the bit
    volume = source[0]
    mirrored = plain.translate(volume[..., ::-1].copy())[..., ::-1]
    expected = (plain.translate(volume) + mirrored) / 2
    assert np.allclose(flipped.translate(volume), expected, atol=1e-6)
    assert not np.allclose(expected, plain.translate(volume), atol=1e-4)  # the mirror's translation differs
    # back to the source only g_ab's input is known to have been mirrored in training: translate_back stays plain
    assert np.array_equal(flipped.translate_back(volume), plain.translate_back(volume))
    flipped.save(tmp_path / "model")  # the saved model keeps the option: `daseg translate` gives the same SynCT
    assert np.array_equal(load_translator(tmp_path / "model").translate(volume), flipped.translate(volume))


def test_tta_flip_without_a_left_right_flip_in_source_augment_is_a_config_error() -> None:
    for augment in ([], [{"name": "rotation"}], [{"name": "flip", "horizontal": False}], [{"name": "flip", "p": 0}]):
        with pytest.raises(ConfigError, match="tta_flip needs a left-right flip in source_augment"):
            TRANSLATORS.build({"name": "cyclegan", "tta_flip": True, "source_augment": augment})
    for name in ("cut", "shape_cyclegan"):  # every adversarial translator takes it
        assert TRANSLATORS.build({"name": name, "tta_flip": True, "source_augment": ["flip"]}).config["tta_flip"]


def test_two_fits_give_bit_identical_weights_on_two_threads(unpaired_large) -> None:
    """Issue 43: the smallest run that showed the README job's run-to-run difference. Batches of 16 large images
    into a one-image pool make every query contest its slot; with the pool's racing write on two threads, two fits
    with one seed came out different."""
    source, target = unpaired_large
    spec = {"name": "cyclegan", **TINY, "batch_size": 16, "pool_size": 1, "context": 1, "iterations_per_epoch": 6}
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        fits = [TRANSLATORS.build(spec).fit(source, target, seed=4) for _ in range(2)]
    finally:
        torch.set_num_threads(threads)
    a, b = (_weights(f) for f in fits)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert np.array_equal(fits[0].translate(source[0]), fits[1].translate(source[0]))
