"""Step folders count only when complete; `latest` moves last. Failures injected at each write
(what a kill or a full disk does mid-save) leave the previous step as the one to resume."""

from __future__ import annotations

import stat

import pytest
import torch

from remoteglm.errors import RemoteGLMError
from remoteglm.train import checkpointing as ck


class Boom(RuntimeError):
    pass


def _model_and_opt():
    torch.manual_seed(0)
    m = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    m(torch.randn(2, 4)).sum().backward()
    opt.step()
    return m, opt


def _save(run, step, m, opt, write_config=None):
    ck.save_step(run, step, m, opt, {"losses": [[1, 0.5, 1e-2]]},
                 write_config=write_config or (lambda d: (d / "model_config.json").write_text("{}")))


def test_a_complete_step_is_resumable(tmp_path):
    m, opt = _model_and_opt()
    _save(tmp_path, 2, m, opt)
    assert ck.read_latest(tmp_path) == 2
    assert not ck.step_missing(tmp_path / "2")
    state = torch.load(tmp_path / "2" / ck.WEIGHTS, weights_only=True)  # plain types only
    assert state["iteration"] == 2 and set(state["module"]) == {"weight", "bias"}
    optim = torch.load(ck.optim_file(tmp_path / "2", 0), weights_only=True)
    assert optim["optimizer"]["state"][0]["exp_avg"].abs().sum() > 0  # Adam moments are there


class BadOptimizer:
    def __init__(self, opt):
        self.opt = opt

    def state_dict(self):
        raise Boom("killed while writing the optimizer state")


class BadModel(torch.nn.Module):
    def state_dict(self, *a, **k):
        raise Boom("killed while writing the weights")


@pytest.mark.parametrize("where", ["optimizer", "weights", "config"])
def test_a_failed_save_leaves_the_previous_step_as_latest(tmp_path, where):
    m, opt = _model_and_opt()
    _save(tmp_path, 2, m, opt)
    model, optimizer, cfg = m, opt, None
    if where == "optimizer":
        optimizer = BadOptimizer(opt)
    elif where == "weights":
        model = BadModel()
    else:
        def cfg(d):
            raise Boom("killed while writing model_config.json")
    with pytest.raises(Boom):
        _save(tmp_path, 4, model, optimizer, cfg)
    assert (tmp_path / "latest").read_text().strip() == "2"
    assert ck.read_latest(tmp_path) == 2
    assert ck.complete_steps(tmp_path) == [2] or where == "config"
    assert not list(tmp_path.rglob("*.tmp"))  # no half-written file left behind


def test_latest_that_names_an_incomplete_step_is_refused(tmp_path):
    m, opt = _model_and_opt()
    _save(tmp_path, 2, m, opt)
    _save(tmp_path, 4, m, opt)
    ck.optim_file(tmp_path / "4", 0).unlink()
    with pytest.raises(RemoteGLMError, match=r"step 4 is incomplete \(missing optim_rank_00.pt\).*echo 2 >"):
        ck.read_latest(tmp_path)


def test_old_steps_beyond_keep_are_pruned_only_when_complete(tmp_path):
    m, opt = _model_and_opt()
    for step in (1, 2, 3):
        ck.save_step(tmp_path, step, m, opt, {}, write_config=lambda d: None, keep=2)
    assert ck.complete_steps(tmp_path) == [2, 3]


def test_run_files_honour_the_umask(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        m, opt = _model_and_opt()
        _save(tmp_path, 1, m, opt)
    finally:
        os.umask(old)
    for f in [tmp_path / "latest", tmp_path / "1" / ck.WEIGHTS, ck.optim_file(tmp_path / "1", 0), tmp_path / "1" / ck.TRAIN_STATE]:
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f
