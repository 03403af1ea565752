"""`--resume` after an edit is correct or refuses: a changed config value or input file re-runs every stage that
read it (and what follows), and the result equals a fresh run of the new config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from da_seg import load_config
from da_seg.pipeline import run_pipeline
from da_seg.translators.cyclegan import CycleGAN
from da_seg.volume import read_volume, write_volume

QUICK = {"gan_epochs": 1, "gan_iterations": 2, "seg_epochs": 1, "baselines": '["no_adaptation"]'}


def _metrics(run_dir: Path) -> list[dict]:
    rows = json.loads((run_dir / "evaluation/metrics.json").read_text())
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def _resume_equals_fresh(tmp_path: Path, tiny_config, name: str, overrides: dict, **kw) -> tuple[Path, Path]:
    """Resume the run ``name`` with ``overrides``; a fresh run elsewhere with the same config must agree."""
    resumed = run_pipeline(load_config(tiny_config(tmp_path, name, **{**QUICK, **kw}), overrides), resume=True)
    fresh = run_pipeline(
        load_config(tiny_config(tmp_path / f"fresh-{len(overrides)}", name, **{**QUICK, **kw}), overrides)
    )
    assert _metrics(resumed.run_dir) == _metrics(fresh.run_dir)
    return resumed.run_dir, fresh.run_dir


def test_resume_after_changing_seed_or_loss_retrains(tmp_path: Path, tiny_config, capfd) -> None:
    first = run_pipeline(load_config(tiny_config(tmp_path, "edited", **QUICK)))
    before = _metrics(first.run_dir)
    run_dir, _ = _resume_equals_fresh(tmp_path, tiny_config, "edited", {"seed": 7})
    assert _metrics(run_dir) != before  # the seed reached every stage (it once kept the old weights)
    assert "stage 'seg_synct': its settings, inputs or code changed" in capfd.readouterr().out
    run_dir, _ = _resume_equals_fresh(tmp_path, tiny_config, "edited", {"seed": 7, "segmentation.loss": "dice"})
    err = capfd.readouterr().out
    assert "resume: stage 'seg_synct'" in err and "resume: stage 'translator'" not in err  # it did not read the loss


@pytest.fixture
def user_data(tmp_path: Path, tiny_phantom_data: Path) -> dict[str, Path]:
    """A user's own copy of the tiny phantom's folders, free to edit."""
    out = {}
    for role in ("source", "target", "evaluation"):
        out[role] = Path(shutil.copytree(tiny_phantom_data / role, tmp_path / "data" / role))
    return out


def test_resume_after_removing_a_subject_or_replacing_a_label(tmp_path: Path, tiny_config, user_data) -> None:
    first = run_pipeline(load_config(tiny_config(tmp_path, "files", data=user_data, **QUICK)))
    trained = {p: p.stat().st_mtime_ns for p in first.run_dir.glob("seg_*/model/*.safetensors")}
    # a labelled source subject removed (images and labels)
    victim = sorted((user_data["source"] / "images").iterdir())[-1]
    victim.unlink()
    (user_data["source"] / "labels" / victim.name).unlink()
    resumed = run_pipeline(load_config(tiny_config(tmp_path, "files", data=user_data, **QUICK)), resume=True)
    fresh = run_pipeline(load_config(tiny_config(tmp_path / "fresh1", "files", data=user_data, **QUICK)))
    assert _metrics(resumed.run_dir) == _metrics(fresh.run_dir)
    assert not (resumed.run_dir / "synct" / victim.name).exists()  # the SynCT of the removed subject is gone
    retrained = {p: p.stat().st_mtime_ns for p in resumed.run_dir.glob("seg_*/model/*.safetensors")}
    assert retrained.keys() == trained.keys() and all(retrained[p] != trained[p] for p in trained)
    # an evaluation label replaced: the metrics change, the trained models are reused
    label = sorted((user_data["evaluation"] / "labels").iterdir())[0]
    mask = read_volume(label)
    write_volume(mask.with_array(np.zeros_like(mask.array)), label, mask=True)
    weights = {p: p.stat().st_mtime_ns for p in resumed.run_dir.glob("seg_*/model/*.safetensors")}
    again = run_pipeline(load_config(tiny_config(tmp_path, "files", data=user_data, **QUICK)), resume=True)
    fresh = run_pipeline(load_config(tiny_config(tmp_path / "fresh2", "files", data=user_data, **QUICK)))
    assert _metrics(again.run_dir) == _metrics(fresh.run_dir)
    scored = [r for r in _metrics(again.run_dir) if r["test"] == "CT" and r["case"] == label.name.split(".")[0]]
    assert scored and all(r["dice"] in (0.0, 1.0) for r in scored)  # scored against the new, empty label
    assert {p: p.stat().st_mtime_ns for p in again.run_dir.glob("seg_*/model/*.safetensors")} == weights


def _translator_epochs(run_dir: Path) -> list[tuple[int, float]]:
    """(epoch, learning rate) of each epoch the translator's log records, in order."""
    lines = (run_dir / "translator/work/log.jsonl").read_text().splitlines()
    return [(r["epoch"], r["lr"]) for r in map(json.loads, lines) if r["kind"] == "epoch"]


def test_extend_translator_trains_only_the_added_epochs(tmp_path: Path, tiny_config, capfd) -> None:
    """Issue 43: raising translator.epochs continues the finished translator only when asked (--extend-translator);
    plain --resume trains it again from scratch and says why. A continued stage has its own fingerprint."""
    quick = {**QUICK, "baselines": "[]", "gan_epochs": 2}
    path = tiny_config(tmp_path, "extend", **quick)
    first = run_pipeline(load_config(path))
    assert [e for e, _ in _translator_epochs(first.run_dir)] == [1, 2]
    longer = {"translator.epochs": 3}

    continued = run_pipeline(load_config(path, longer), resume=True, extend_translator=True)
    out = capfd.readouterr().out
    assert "stage 'translator': continuing from epoch 2 to 3 (--extend-translator)" in out
    log = _translator_epochs(continued.run_dir)
    assert [e for e, _ in log] == [1, 2, 3]  # epoch 3 only, after the first run's two
    assert log[-1][1] == pytest.approx(2e-4 * 0.5)  # the 3-epoch schedule (decay over its last epoch), re-derived
    done = json.loads((continued.run_dir / "translator/done.json").read_text())
    assert done["epochs"] == 3 and done["history"] == [2]

    again = run_pipeline(load_config(path, longer), resume=True, extend_translator=True)
    assert "stage 'translator'" not in capfd.readouterr().out  # the continued translator is reused as it is
    assert json.loads((again.run_dir / "translator/done.json").read_text()) == done

    straight = run_pipeline(load_config(path, longer), resume=True)  # no flag: one 3-epoch schedule from scratch
    out = capfd.readouterr().out
    assert "it was continued (2 -> 3 epochs, --extend-translator); without --extend-translator" in out
    assert [e for e, _ in _translator_epochs(straight.run_dir)] == [1, 2, 3]
    assert json.loads((straight.run_dir / "translator/done.json").read_text())["fingerprint"] != done["fingerprint"]

    run_pipeline(load_config(path, {"translator.epochs": 4}), resume=True)
    out = capfd.readouterr().out
    assert "trained for 3 epochs with otherwise the same settings; --extend-translator would continue it" in out
    assert "stage 'translator': its settings, inputs or code changed since it ran; running it again" in out


def test_extend_translator_needs_resume(tmp_path: Path, tiny_config) -> None:
    from da_seg.errors import DasegError

    with pytest.raises(DasegError, match="--extend-translator continues the translator of an earlier run: use it wi"):
        run_pipeline(load_config(tiny_config(tmp_path, "no_resume", **QUICK)), extend_translator=True)
    assert not (tmp_path / "runs").exists()  # refused before anything was written


class _ExplodingGAN(CycleGAN):
    """A plugin's CycleGAN whose training step fails on its first iteration."""

    name = "exploding_gan"

    def train_step(self, real_a, real_b, state, mask_a=None):
        raise RuntimeError("boom in the generator")


def test_an_exception_inside_the_translator_during_training_names_it(tmp_path: Path, tiny_config) -> None:
    """Issue 43: a translator raising mid-training gave a bare traceback naming no component."""
    import types

    from da_seg import hookimpl
    from da_seg.errors import ComponentError
    from da_seg.plugins import load_plugins, unload_plugin

    plugin = types.ModuleType("exploding_gan_plugin")
    plugin.register_translators = hookimpl(lambda register: register("exploding_gan", _ExplodingGAN))
    load_plugins([plugin])
    try:
        config = load_config(tiny_config(tmp_path, "exploding", **QUICK), {"translator.name": "exploding_gan"})
        with pytest.raises(ComponentError) as info:
            run_pipeline(config)
    finally:
        unload_plugin(plugin)
    message = str(info.value)
    assert message.startswith("translator 'exploding_gan' (plugin 'exploding_gan_plugin', "), message
    assert "failed during training: RuntimeError: boom in the generator; rerun with --debug" in message


def test_resuming_a_translator_whose_state_lacks_keys_is_one_error(tmp_path: Path, tiny_config) -> None:
    """Issue 43: a state.pt with missing keys gave a KeyError traceback on --resume."""
    import torch

    from da_seg.errors import DataError

    path = tiny_config(tmp_path, "lacking", **QUICK)
    run_pipeline(load_config(path))
    state_file = tmp_path / "runs/lacking/translator/work/last/state.pt"
    state = torch.load(state_file, weights_only=True)
    del state["opt_g"], state["pool_a"]
    torch.save(state, state_file)
    with pytest.raises(DataError, match=r"state.pt.*(opt_g.*pool_a|pool_a.*opt_g)") as info:
        run_pipeline(load_config(path, {"translator.epochs": 2}), resume=True, extend_translator=True)
    assert "\n" not in str(info.value)
