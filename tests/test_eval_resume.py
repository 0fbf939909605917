"""Resumable evaluation (state files) and evaluation sharded over torch.distributed ranks (gloo, 2 processes)."""
import json

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from robust_zoo.evaluation import evaluate, protocol, resume
from robust_zoo.evaluation.state import EvalStateError
from robust_zoo.threat_models import ThreatModel

THREAT = ThreatModel('toy', 'toy', 'Linf', 0.05, ('pgd-5',), 40, 'none')
ATTACKS = ['pgd-5', 'fgsm']
MAKE_ATTACK = protocol.make_attack


def _model_and_data(n=40):
    """A random linear model on 4x4 images; labels are its own decisions, a third of them shifted: mixed outcomes."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))
    x = torch.rand(n, 1, 4, 4)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::3] = (y[::3] + 1) % 10
    return model, (x, y)


def _numbers(result):
    d = result.to_dict()
    d.pop('seconds')
    return d


class _Interrupt:
    """Wraps make_attack: counts the calls of attack `which` and raises KeyboardInterrupt at call number `at`."""

    def __init__(self, monkeypatch, which, at=None):
        self.calls, self.at = 0, at

        def make(spec, *args, **kwargs):
            attack = MAKE_ATTACK(spec, *args, **kwargs)
            if spec != which:
                return attack

            def counted(m, x, y):
                self.calls += 1
                if self.calls == self.at:
                    raise KeyboardInterrupt
                return attack(m, x, y)
            return counted

        monkeypatch.setattr(protocol, 'make_attack', make)


@pytest.mark.parametrize('attacks, n', [(ATTACKS, 24), (['apgd-ce'], 12)])  # ours; AutoAttack's through its adapter
def test_an_interrupted_run_resumes_to_the_numbers_of_an_uninterrupted_one(tmp_path, monkeypatch, attacks, n):
    model, data = _model_and_data(n)
    clean = evaluate(model, THREAT, data=data, attacks=attacks, batch_size=6)
    assert 0 < clean.robust_accuracy < clean.clean_accuracy < 1  # a test with something to lose
    state = tmp_path / 'eval.json'
    stop = n // 6 - 1  # the attack raises KeyboardInterrupt in the last batch
    _Interrupt(monkeypatch, attacks[0], at=stop + 1)
    with pytest.raises(KeyboardInterrupt):
        evaluate(model, THREAT, data=data, attacks=attacks, batch_size=6, state_path=state)
    saved = json.loads(state.read_text())
    assert sorted(saved['batches'], key=int) == [str(b) for b in range(stop)]
    assert saved['format'] == 'robust_zoo.eval_state/1'
    assert saved['fingerprint']['attacks'] == attacks and len(saved['fingerprint']['model']) == 64

    counter = _Interrupt(monkeypatch, attacks[0])
    resumed = evaluate(model, THREAT, data=data, attacks=attacks, batch_size=6, state_path=state)
    assert counter.calls == 1  # the last batch only
    assert _numbers(resumed) == _numbers(clean)
    assert len(json.loads(state.read_text())['batches']) == n // 6
    again = evaluate(model, THREAT, data=data, attacks=attacks, batch_size=6, state_path=state)
    assert counter.calls == 1 and _numbers(again) == _numbers(clean)  # a finished state: nothing to redo


def test_a_state_of_another_evaluation_is_refused(tmp_path):
    model, data = _model_and_data(16)
    state = tmp_path / 'eval.json'
    evaluate(model, THREAT, data=data, attacks=['fgsm'], batch_size=8, state_path=state, checks=False)
    with pytest.raises(EvalStateError, match='the seed differs'):
        evaluate(model, THREAT, data=data, attacks=['fgsm'], batch_size=8, state_path=state, checks=False, seed=1)
    with torch.no_grad():
        model[1].bias[0] += 1e-3
    with pytest.raises(EvalStateError, match=r'model weights \(parameter digest\) differ.*Delete the file'):
        evaluate(model, THREAT, data=data, attacks=['fgsm'], batch_size=8, state_path=state, checks=False)
    state.write_text('{"not": "a state"}')
    with pytest.raises(ValueError, match='not a robust_zoo evaluation state'):
        evaluate(model, THREAT, data=data, attacks=['fgsm'], batch_size=8, state_path=state, checks=False)


def test_an_autoattack_subset_state_from_before_the_standard_settings_is_refused(tmp_path):
    # an older robust_zoo ran `apgd-ce` with pyautoattack's custom settings (5 restarts): not to be mixed in
    model, data = _model_and_data(8)
    state = tmp_path / 'eval.json'
    evaluate(model, THREAT, data=data, attacks=['apgd-ce'], batch_size=8, state_path=state, checks=False)
    saved = json.loads(state.read_text())
    assert saved['fingerprint']['autoattack_subset'] == 'standard settings'
    del saved['fingerprint']['autoattack_subset']
    state.write_text(json.dumps(saved))
    with pytest.raises(EvalStateError, match="AutoAttack subset's settings"):
        evaluate(model, THREAT, data=data, attacks=['apgd-ce'], batch_size=8, state_path=state, checks=False)
    state.unlink()
    evaluate(model, THREAT, data=data, attacks=['fgsm'], batch_size=8, state_path=state, checks=False)
    assert 'autoattack_subset' not in json.loads(state.read_text())['fingerprint']  # older PGD states still match


def test_parameters_are_frozen_during_the_run_and_restored(monkeypatch):
    model, data = _model_and_data(8)
    seen = []
    monkeypatch.setattr(protocol, 'make_attack', lambda *a, **k: lambda m, x, y: seen.append(
        any(p.requires_grad for p in m.parameters())) or MAKE_ATTACK(*a, **k)(m, x, y))
    evaluate(model, THREAT, data=data, attacks=['pgd-5'], checks=False)
    assert seen == [False] and all(p.requires_grad and p.grad is None for p in model.parameters())


# --- sharded over 2 processes -----------------------------------------------------------------------------------

def _rank(rank, world, init, out, state):
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{init}', rank=rank, world_size=world)
    try:
        saves = []
        real = resume.save_state
        resume.save_state = lambda *a: saves.append(1) or real(*a)
        model, data = _model_and_data()
        plain = evaluate(model, THREAT, data=data, attacks=ATTACKS, batch_size=8,
                         checks=['budget', 'steps_convergence', 'restarts'], probe=8)
        resumable = evaluate(model, THREAT, data=data, attacks=ATTACKS, batch_size=8, state_path=state)
        with open(f'{out}.{rank}', 'w') as f:
            json.dump(dict(plain=_numbers(plain), resumable=_numbers(resumable), saves=len(saves)), f)
    finally:
        dist.destroy_process_group()


def test_two_ranks_return_the_single_process_numbers(tmp_path):
    threads = torch.get_num_threads()
    model, data = _model_and_data()
    single = evaluate(model, THREAT, data=data, attacks=ATTACKS, batch_size=8,
                      checks=['budget', 'steps_convergence', 'restarts'], probe=8)  # 2 full checks: one per rank
    single_fast = evaluate(model, THREAT, data=data, attacks=ATTACKS, batch_size=8)
    # fork: the children start with robust_zoo already imported (spawning would re-import it, ~10 s here)
    mp.start_processes(_rank, args=(2, tmp_path / 'init', tmp_path / 'out', tmp_path / 'state.json'), nprocs=2,
                       start_method='fork')
    torch.set_num_threads(threads)
    ranks = [json.loads((tmp_path / f'out.{r}').read_text()) for r in range(2)]
    assert ranks[0]['plain'] == ranks[1]['plain'] == _numbers(single)
    assert ranks[0]['resumable'] == ranks[1]['resumable'] == _numbers(single_fast)
    assert ranks[0]['saves'] == 3 and ranks[1]['saves'] == 0  # 5 batches in 3 rounds, written by rank 0 only
    assert sorted(json.loads((tmp_path / 'state.json').read_text())['batches'], key=int) == ['0', '1', '2', '3', '4']
    # the state of the sharded run resumes in one process: nothing left to attack, the same numbers
    assert _numbers(evaluate(model, THREAT, data=data, attacks=ATTACKS, batch_size=8,
                             state_path=tmp_path / 'state.json')) == _numbers(single_fast)
