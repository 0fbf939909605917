"""A card sets a published result beside ours with a verdict, and states its training cost with a time plot."""
import json
from pathlib import Path

import pytest
import timm
import torch
import yaml
from huggingface_hub import constants as hf_constants

import robust_zoo  # noqa: F401
from robust_zoo.evaluation import evaluate
from robust_zoo.publish import leaderboard as lb
from robust_zoo.publish.card import write_card_repo
from robust_zoo.publish.cost import train_images_of, training_cost
from robust_zoo.publish.reference import compare_to_reference, load_reference, reproductions_markdown
from robust_zoo.training import device_name, save_weights
from _train_args import train_args_yaml as _train_args

ROOT = Path(__file__).resolve().parents[1]
ARCH = 'lenet_small_relu_at'
REFERENCE = ROOT / 'experiments' / 'references' / 'croce2019_fmnist_lenetsmall_at.yaml'


def _record(clean, robust, n, attacks=('pgd-20',)):
    return dict(model=f'robust_zoo/{ARCH}', n_examples=n, clean_accuracy=clean, robust_accuracy=robust,
                confidence_interval=[robust - 0.01, robust + 0.01], attacks={a: robust for a in attacks},
                threat_model=dict(id='fashion-mnist-linf', norm='Linf', eps=0.1))


def test_the_reference_yaml_of_the_reproduction_loads():
    ref = load_reference(REFERENCE)
    assert (ref['clean']['accuracy'], ref['robust']['accuracy'], ref['robust']['n']) == (0.8846, 0.785, 1000)


@pytest.mark.parametrize('edit, message', [
    (lambda r: r.pop('robust'), 'lacks robust'),
    (lambda r: r['clean'].update(accuracy=88.46), 'not a fraction'),
    (lambda r: r['robust'].pop('n'), 'robust needs accuracy, n and protocol'),
])
def test_a_bad_reference_is_a_clear_error(tmp_path, edit, message):
    ref = yaml.safe_load(REFERENCE.read_text())
    edit(ref)
    (tmp_path / 'ref.yaml').write_text(yaml.safe_dump(ref))
    with pytest.raises(ValueError, match=message):
        load_reference(tmp_path / 'ref.yaml')
    with pytest.raises(ValueError, match='does not exist'):
        load_reference(tmp_path / 'missing.yaml')


def test_the_verdict_allows_for_the_test_sample_error_of_both_numbers():
    ref = load_reference(REFERENCE)
    rows = {r['kind']: r for r in compare_to_reference(ref, [_record(0.887, 0.60, 10000),
                                                            _record(0.89, 0.781, 1000)])['rows']}
    assert rows['clean']['verdict'] == 'agrees' and rows['clean']['ours_n'] == 10000, 'clean on the most images'
    assert rows['robust']['verdict'] == 'agrees' and rows['robust']['ours_n'] == 1000, "robust on the paper's n"
    low = {r['kind']: r for r in compare_to_reference(ref, [_record(0.86, 0.74, 1000)])['rows']}
    assert low['robust']['verdict'] == 'lower' and low['robust']['difference'] == pytest.approx(-0.045)
    assert low['clean']['verdict'] == 'lower'
    high = {r['kind']: r for r in compare_to_reference(ref, [_record(0.92, 0.83, 1000)])['rows']}
    assert high['robust']['verdict'] == 'higher'


def test_the_robust_number_compared_is_the_strongest_attack_on_the_papers_images():
    ref = load_reference(REFERENCE)
    rows = compare_to_reference(ref, [_record(0.89, 0.79, 1000, ('pgd-20',)),
                                      _record(0.89, 0.77, 1000, ('autoattack-standard',))])['rows']
    robust = next(r for r in rows if r['kind'] == 'robust')
    assert robust['ours'] == 0.77 and robust['ours_protocol'] == 'autoattack-standard'
    none = compare_to_reference(ref, [_record(0.89, 0.79, 500)])['rows']
    assert 'verdict' not in next(r for r in none if r['kind'] == 'robust'), 'no number on the same images: no verdict'


def test_training_cost_adds_up_the_logged_throughput_and_finds_when_the_run_got_there():
    rows = [dict(epoch=str(i), train_img_per_sec=str(v), eval_robust_acc=str(r))
            for i, (v, r) in enumerate([(100, 0.5), (200, 0.70), (100, 0.745), (50, 0.75)])]
    cost = training_cost(rows, 3600, 'CPU: test', threads=2)
    assert cost['hours_per_epoch'] == [0.01, 0.015, 0.025, 0.045]
    assert (cost['reached_epoch'], cost['reached_hours']) == (2, 0.025), 'first epoch within 1 point of the last'
    assert training_cost(rows, None, 'cpu') is None
    early = training_cost(rows, 3600, 'CPU: test', threads=1, kept_epoch=1)
    assert (early['final_val_robust'], early['reached_epoch']) == (0.70, 1), 'measured against the shipped epoch'


def test_the_training_image_count_comes_from_the_record_else_the_log(tmp_path):
    (tmp_path / 'log.txt').write_text('robust_zoo/x: 0.1M parameters; fashion-mnist: 59000 train / 1000 val images\n')
    assert train_images_of(tmp_path, {}) == 59000
    assert train_images_of(tmp_path, {'train_images': 123}) == 123


def test_the_device_is_named_in_words():
    assert device_name('cpu').startswith('CPU: ')




def test_a_card_with_a_reference_shows_both_rows_the_verdict_and_the_cost(tmp_path, monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setattr(hf_constants, 'HF_HUB_OFFLINE', True)
    run = tmp_path / 'run'
    run.mkdir()
    torch.manual_seed(0)
    model = timm.create_model(f'robust_zoo/{ARCH}').eval()
    save_weights(model.state_dict(), run / 'model.safetensors', dict(arch=f'robust_zoo/{ARCH}', epoch='1'))
    (run / 'args.yaml').write_text(_train_args(['--model', f'robust_zoo/{ARCH}', '--val-samples', '100',
                                                '--epochs', '2', '--output', str(run)]))
    (run / 'summary.csv').write_text('epoch,train_loss,train_adv_acc,train_clean_acc,train_img_per_sec,'
                                     'eval_clean_acc,eval_robust_acc,lr\n0,2.3,0.1,0.1,600.0,0.2,0.1,0.001\n'
                                     '1,2.2,0.1,0.1,300.0,0.3,0.15,0.001\n')
    x, y = torch.rand(20, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.arange(20) % 10
    record = evaluate(model, 'fashion-mnist-linf', data=(x, y), attacks=['fgsm'], n_examples=20, checks=False,
                      model_name=f'robust_zoo/{ARCH}',
                      weights_sha256=__import__('hashlib').sha256((run / 'model.safetensors').read_bytes()).hexdigest())
    (run / 'final_eval.json').write_text(json.dumps(dict(model=f'robust_zoo/{ARCH}', epochs_run=2,
                                                         evaluation=record.to_dict(), train_images=6000,
                                                         device_name='CPU: test cpu', threads=1)))
    ref = yaml.safe_load(REFERENCE.read_text())
    ref['robust']['n'] = 20  # the paper's n made ours, so that a verdict is given
    (tmp_path / 'ref.yaml').write_text(yaml.safe_dump(ref))
    folder = write_card_repo(run, tag='ref_s0', out_root=tmp_path / 'cards', index_path=tmp_path / 'published.json',
                             reference=tmp_path / 'ref.yaml')
    text = (folder / 'README.md').read_text()
    assert '## Published result beside ours' in text and '| paper | 88.5% (n 10,000; all 10,000 test images)' in text
    assert f"| this model | {100 * record.clean_accuracy:.1f}% (n 20; clean)" in text
    assert 'robust: **lower** than the paper' in text or 'robust: **agrees**' in text
    assert '## Training cost' in text and 'CPU: test cpu' in text and '(training_vs_time.png)' in text
    assert (folder / 'training_vs_time.png').is_file()
    assert '0.01 CPU-hours' in text, '6000 images at 600 then 300 img/s: 30 s, 0.0083 h'
    meta = yaml.safe_load(text.split('---')[1])['robust_zoo']
    assert meta['reference']['rows'][1]['paper'] == 0.785 and meta['training_cost']['device'] == 'CPU: test cpu'
    table = reproductions_markdown([dict(meta, name=folder.name)])
    assert f'| `{folder.name}` |' in table and '78.5% (n 20' in table
    page = tmp_path / 'results.md'
    page.write_text(f'{lb.LEADERBOARD_START}\n{lb.LEADERBOARD_END}\n{lb.REPRODUCTIONS_START}\nold\n'
                    f'{lb.REPRODUCTIONS_END}\n')
    lb.write_leaderboard(page, cards_root=tmp_path / 'cards')
    assert 'old' not in page.read_text() and table.strip() in page.read_text(), 'the results page gets the row'
