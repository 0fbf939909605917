"""What callers of the evaluator from before its split into protocol / runner / checklist rely on keeps working:
the states they wrote resume, as the half-done evaluations carried in train/pending/ must (tests/fixtures/
eval_states/ holds a run stopped in its third batch and a finished one, both written by the unsplit evaluator;
make_states.py says how), the record's former name still works, and the public import paths still import."""
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

import robust_zoo
from robust_zoo.evaluation import EvalRecord, evaluate, protocol

FIXTURES = Path(__file__).parent / 'fixtures' / 'eval_states'
_spec = importlib.util.spec_from_file_location('make_states', FIXTURES / 'make_states.py')
states = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(states)
MAKE_ATTACK = protocol.make_attack


def _numbers(result):
    d = result.to_dict()
    d.pop('seconds')
    return d


def _count_attacks(monkeypatch):
    calls = []

    def make(spec, *args, **kwargs):
        attack = MAKE_ATTACK(spec, *args, **kwargs)
        return lambda m, x, y: calls.append(spec) or attack(m, x, y)
    monkeypatch.setattr(protocol, 'make_attack', make)
    return calls


def _resume(tmp_path, monkeypatch, name, settings):
    state = tmp_path / name
    shutil.copy(FIXTURES / name, state)
    old = json.loads(state.read_text())
    kwargs = {k: v for k, v in settings.items() if k not in ('n', 'stop_batch')}
    data = states.toy_data(settings['n'])
    fresh = evaluate(states.toy_model(), states.toy_threat(), data=data, state_path=tmp_path / 'fresh.json', **kwargs)
    # today's fingerprint of the same evaluation is the one the unsplit evaluator wrote
    assert json.loads((tmp_path / 'fresh.json').read_text())['fingerprint'] == old['fingerprint']
    calls = _count_attacks(monkeypatch)
    resumed = evaluate(states.toy_model(), states.toy_threat(), data=data, state_path=state, **kwargs)
    return old, json.loads(state.read_text()), fresh, resumed, calls


def test_a_half_done_state_of_the_unsplit_evaluator_resumes_to_the_numbers_of_a_fresh_run(tmp_path, monkeypatch):
    old, new, fresh, resumed, calls = _resume(tmp_path, monkeypatch, 'half_done.state.json', states.HALF_DONE)
    assert sorted(old['batches'], key=int) == ['0', '1']
    assert calls == ['pgd-5', 'fgsm'] * 2  # the two batches left, nothing done twice
    assert 0 < resumed.robust_accuracy < resumed.clean_accuracy < 1  # outcomes of every kind
    assert _numbers(resumed) == _numbers(fresh)
    assert resumed.seconds > old['seconds']  # the seconds of both runs
    assert new['pre_checks'] == old['pre_checks']
    assert {k: new['batches'][k] for k in old['batches']} == old['batches']
    assert sorted(new['batches'], key=int) == ['0', '1', '2', '3']


def test_a_finished_state_with_its_full_checks_resumes_without_attacking(tmp_path, monkeypatch):
    old, new, fresh, resumed, calls = _resume(tmp_path, monkeypatch, 'finished.state.json', states.FINISHED)
    assert old['fingerprint']['autoattack_subset'] == 'standard settings' and old['post_checks']
    assert calls == []
    assert _numbers(resumed) == _numbers(fresh)
    assert [c['name'] for c in resumed.checks][-2:] == ['budget (apgd-ce)', 'restarts']


@pytest.mark.parametrize('change, differs', [(dict(seed=1), 'the seed differs'),
                                             (dict(batch_size=4), 'the batch size differs')])
def test_an_old_state_still_refuses_another_evaluation(tmp_path, change, differs):
    state = tmp_path / 'half_done.state.json'
    shutil.copy(FIXTURES / state.name, state)
    kwargs = {k: v for k, v in states.HALF_DONE.items() if k not in ('n', 'stop_batch')}
    with pytest.raises(ValueError, match=differs):
        evaluate(states.toy_model(), states.toy_threat(), data=states.toy_data(states.HALF_DONE['n']),
                 state_path=state, **{**kwargs, **change})


def test_the_records_former_name_is_the_record_with_a_deprecation_warning():
    # robust_zoo's EvalResult was renamed: huggingface_hub.EvalResult (a model-index entry) is another thing
    from robust_zoo.evaluation import result
    with pytest.warns(DeprecationWarning, match='EvalRecord'):
        from robust_zoo.evaluation import EvalResult
    with pytest.warns(DeprecationWarning, match='EvalRecord'):
        assert result.EvalResult is EvalResult is EvalRecord
    with pytest.raises(AttributeError):
        robust_zoo.evaluation.NoSuchThing


def test_the_evaluators_public_names_import_from_where_they_did():
    from robust_zoo.evaluation.evaluator import (  # noqa: F401
        CHECKS, FAST_CHECKS, EvalStateError, attack_settings, compiled_for_attacks, evaluate, load_eval_data,
        make_attack,
    )
    assert robust_zoo.evaluate is evaluate and issubclass(EvalStateError, ValueError)
    assert attack_settings('pgd-20', states.toy_threat())['step_size'] == pytest.approx(2.5 * states.EPS / 20)
