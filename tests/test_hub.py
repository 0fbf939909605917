"""Published models as Hub repo folders: card writing, the three loading routes, sha256 checks, push, leaderboard.

Nothing here touches the network: HF_HUB_OFFLINE=1 throughout, a socket guard on push, a mocked HfApi.
"""
import copy
import hashlib
import json
import logging
import re
import shutil
import socket
from pathlib import Path
from unittest import mock

import huggingface_hub
import pytest
import timm
import torch
import yaml
from huggingface_hub import ModelCard
from huggingface_hub import constants as hf_constants
from timm.models import get_pretrained_cfg

import robust_zoo
import robust_zoo.sparta_bank
from robust_zoo import demo, publish
from robust_zoo.models import _hub, _pretrained
from robust_zoo.publish import leaderboard as lb
from robust_zoo.publish import recipes, records, tables
from robust_zoo.cli import main
from robust_zoo.data import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, load_dataset
from robust_zoo.evaluation import evaluate, wilson_interval
from robust_zoo.training import parameter_digest, save_weights
from _rows import fixed_row
from _train_args import train_args_yaml as _train_args

ROOT = Path(__file__).resolve().parents[1]
ARCH, TAG, ORG = 'mlp3_relu_at', 'fmnist_s0', 'acme'
NAME = f'{ARCH}.{TAG}'
HUB_ID = f'{ORG}/{NAME}'




@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """A train_at.py run folder: randomly initialised mlp3 weights, real evaluate() records on 50 and 20 points."""
    out = tmp_path_factory.mktemp('run')
    torch.manual_seed(0)
    model = timm.create_model(f'robust_zoo/{ARCH}').eval()
    save_weights(model.state_dict(), out / 'model.safetensors', dict(arch=f'robust_zoo/{ARCH}', epoch='0'))
    (out / 'args.yaml').write_text(_train_args([
        '--model', f'robust_zoo/{ARCH}', '--train-samples', '256', '--val-samples', '64', '--eval-samples', '50',
        '--epochs', '1', '--eval-attacks', 'fgsm,pgd-20', '--output', str(out)]))
    (out / 'summary.csv').write_text('epoch,train_loss,train_adv_acc,train_clean_acc,train_img_per_sec,eval_clean_acc,'
                                     'eval_robust_acc,lr\n0,2.45,0.01,0.47,8000.0,0.39,0.14,0.0\n')
    if FASHION_MNIST_DIR.exists():
        x, y = load_dataset('fashion-mnist', 'test', n=50)
    else:
        x, y = torch.rand(50, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.arange(50) % 10
    first = evaluate(model, 'fashion-mnist-linf', data=(x, y), attacks=['fgsm', 'pgd-20'], n_examples=50,
                     model_name=f'robust_zoo/{ARCH}').to_dict()
    (out / 'final_eval.json').write_text(json.dumps(dict(model=f'robust_zoo/{ARCH}', epochs_run=1, evaluation=first)))
    second = evaluate(model, 'fashion-mnist-linf', data=(x[:20], y[:20]), attacks=['pgd-20'], n_examples=20,
                      checks=False, model_name=f'robust_zoo/{ARCH}').to_dict()
    (out / 'pgd20_n20.json').write_text(json.dumps(second))
    return dict(dir=out, model=model, records=[first, second])


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """HF_HUB_OFFLINE=1 (huggingface_hub reads it at import: set its constant too) and the test org."""
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setattr(hf_constants, 'HF_HUB_OFFLINE', True)
    monkeypatch.setenv('ROBUST_ZOO_HF_ORG', ORG)


@pytest.fixture
def published():
    """register_published for a test; afterwards robust_zoo's own index again."""
    yield _pretrained.register_published
    _pretrained.register_published()
    assert robust_zoo.list_models(pretrained=True) == sorted(f'robust_zoo/{n}' for n in _pretrained.load_published())


@pytest.fixture(scope='module')
def card(run, tmp_path_factory):
    """The card repo written from the run, with its own published index."""
    root = tmp_path_factory.mktemp('pub')
    folder = publish.write_card_repo(run['dir'], tag=TAG,
                                     evaluations=[run['dir'] / 'final_eval.json', run['dir'] / 'pgd20_n20.json'],
                                     out_root=root / 'model_cards', index_path=root / 'published.json', org=ORG)
    return dict(folder=folder, index=root / 'published.json', cards=root / 'model_cards')


def _x():
    return torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def _sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _hub_cache(tmp_path, folder, repo_id=HUB_ID):
    """A Hugging Face cache holding the card repo at one commit, as hf_hub_download leaves it."""
    cache = tmp_path / 'hf-cache'
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = '0123456789abcdef0123456789abcdef01234567'
    shutil.copytree(folder, repo / 'snapshots' / commit)
    (repo / 'refs').mkdir()
    (repo / 'refs' / 'main').write_text(commit)
    return cache, repo / 'snapshots' / commit


# --- writing ------------------------------------------------------------------------------------------------

def test_card_repo_holds_weights_config_card_and_plots(card, run):
    folder = card['folder']
    assert folder.name == NAME
    assert {'model.safetensors', 'config.json', 'README.md', 'args.yaml', 'summary.csv', 'eval_results.json',
            'training_curves.png', 'evaluation.png'} <= {p.name for p in folder.iterdir()}
    assert (folder / 'model.safetensors').read_bytes() == (run['dir'] / 'model.safetensors').read_bytes()
    for png in folder.glob('*.png'):
        assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    config = json.loads((folder / 'config.json').read_text())
    assert config['architecture'] == ARCH and config['num_classes'] == 10 and config['num_features'] == 256
    assert config['model_args']['act_layer'] == 'relu' and config['model_args']['in_chans'] == 1
    assert config['label_names'] == list(FASHION_MNIST_CLASSES)
    cfg = config['pretrained_cfg']
    assert (cfg['mean'], cfg['std'], cfg['input_size']) == ([0.0], [1.0], [1, 28, 28])
    assert (cfg['dataset'], cfg['threat_model'], cfg['hf_hub_id'], cfg['tag']) == (
        'fashion-mnist', 'fashion-mnist-linf', HUB_ID, TAG)
    assert cfg['input_mean'] == [0.286] and cfg['input_std'] == [0.353]
    assert json.loads((folder / 'eval_results.json').read_text()) == run['records']

    index = json.loads(card['index'].read_text())
    entry = index[NAME]
    assert entry['sha256'] == _sha(folder / 'model.safetensors')
    assert (entry['architecture'], entry['tag'], entry['hf_hub_id']) == (ARCH, TAG, HUB_ID)
    assert entry['clean_accuracy'] == run['records'][0]['clean_accuracy']
    assert entry['robust_accuracy'] == run['records'][0]['robust_accuracy']


def test_card_metadata_parses_back_with_every_protocol(card, run):
    data = ModelCard.load(card['folder'] / 'README.md').data
    assert (data.license, data.library_name, data.model_name) == ('apache-2.0', 'timm', NAME)
    results = {r.metric_config: r for r in data.eval_results}
    first, second = run['records']
    expected = {
        'fashion-mnist-linf clean n=50': ('accuracy', first['clean_accuracy'], 'none'),
        'fashion-mnist-linf fgsm n=50': ('robust_accuracy', first['attacks']['fgsm'], 'fgsm'),
        'fashion-mnist-linf pgd-20 n=50': ('robust_accuracy', first['attacks']['pgd-20'], 'pgd-20'),
        'fashion-mnist-linf worst-case n=50': ('robust_accuracy', first['robust_accuracy'], 'worst-case'),
        'fashion-mnist-linf clean n=20': ('accuracy', second['clean_accuracy'], 'none'),
        'fashion-mnist-linf pgd-20 n=20': ('robust_accuracy', second['robust_accuracy'], 'pgd-20'),
    }
    assert set(results) == set(expected)
    for config, (metric_type, value, attack) in expected.items():
        r = results[config]
        assert (r.task_type, r.dataset_type, r.dataset_split) == ('image-classification', 'fashion_mnist', 'test')
        assert (r.metric_type, r.metric_value) == (metric_type, value)
        assert r.metric_args['attack'] == attack
        assert (r.metric_args['norm'], r.metric_args['eps']) == ('Linf', 0.1)
        assert r.metric_args['n_examples'] == int(config.split('n=')[1])
    worst = results['fashion-mnist-linf worst-case n=50']
    assert worst.metric_args['wilson95'] == list(first['confidence_interval'])
    assert worst.metric_args['attacks'] == ['fgsm', 'pgd-20']
    rz = data.to_dict()['robust_zoo']
    assert (rz['architecture'], rz['activation'], rz['seed'], rz['threat_model']) == \
        (ARCH, 'relu', 0, 'fashion-mnist-linf')


def test_card_text_states_numbers_with_n_attack_interval_checks_and_hash(card, run):
    text = (card['folder'] / 'README.md').read_text()
    first = run['records'][0]
    lo, hi = wilson_interval(round(first['attacks']['fgsm'] * 50), 50)
    assert f"| fgsm | 50 | {100 * first['attacks']['fgsm']:.1f}% | {100 * lo:.1f}% to {100 * hi:.1f}% |" in text
    lo, hi = first['confidence_interval']
    assert (f"| worst case of fgsm, pgd-20 | 50 | {100 * first['robust_accuracy']:.1f}% | {100 * lo:.1f}% to "
            f"{100 * hi:.1f}% |") in text
    for check in first['checks']:
        assert f"| {check['name']} | {check['status']} |" in text
    assert f"timm.create_model('robust_zoo/{NAME}', pretrained=True)" in text
    assert f"'hf-hub:{HUB_ID}'" in text and f"'local-dir:model_cards/{NAME}'" in text
    assert _sha(card['folder'] / 'model.safetensors') in text
    assert 'fgsm-rs, Linf eps 0.1, step 0.125' in text and '| epochs | 1 |' in text
    assert '![training curves (summary.csv)](training_curves.png)' in text
    assert 'Apache-2.0' in text and 'No AutoAttack evaluation' in text


def test_card_refuses_runs_the_registry_name_would_not_rebuild(run, tmp_path):
    other = tmp_path / 'run'
    shutil.copytree(run['dir'], other)
    args = yaml.safe_load((other / 'args.yaml').read_text())
    (other / 'args.yaml').write_text(yaml.safe_dump(dict(args, model_kwargs={'act_layer': 'sparta'})))
    with pytest.raises(ValueError, match="trained with {'act_layer': 'sparta'}"):
        publish.write_card_repo(other, tag=TAG, out_root=tmp_path / 'cards', index_path=tmp_path / 'p.json')
    record = dict(run['records'][0], model='robust_zoo/resnet20_relu_at')
    with pytest.raises(ValueError, match='not the run.s model robust_zoo/mlp3_relu_at'):
        publish.write_card_repo(run['dir'], tag=TAG, evaluations=[record], out_root=tmp_path / 'cards',
                            index_path=tmp_path / 'p.json')
    with pytest.raises(ValueError, match='tag'):
        publish.write_card_repo(run['dir'], tag='a.b', out_root=tmp_path / 'cards', index_path=tmp_path / 'p.json')
    assert not (tmp_path / 'p.json').exists() and not (tmp_path / 'cards').exists()


def test_card_states_the_n_fgsm_budget(run, tmp_path):
    """The zoo's training attack: the card says it is N-FGSM with its noise and without the eps-ball clip."""
    other = tmp_path / 'run'
    shutil.copytree(run['dir'], other)
    args = yaml.safe_load((other / 'args.yaml').read_text())
    (other / 'args.yaml').write_text(yaml.safe_dump(dict(args, attack='n-fgsm')))
    folder = publish.write_card_repo(other, tag=TAG, out_root=tmp_path / 'cards', index_path=tmp_path / 'p.json')
    assert '| attack | n-fgsm, Linf eps 0.1, step 0.1, noise 2 eps, no projection |' in \
        (folder / 'README.md').read_text()


# --- loading ------------------------------------------------------------------------------------------------

def test_registered_cfg_agrees_with_config_and_card(card, published):
    assert published(card['index'], card['cards']) == [f'robust_zoo/{NAME}']
    assert robust_zoo.list_models(pretrained=True) == [f'robust_zoo/{NAME}']
    cfg = get_pretrained_cfg(NAME)
    assert get_pretrained_cfg(ARCH).tag == TAG  # the published tag is the default of its architecture
    config = json.loads((card['folder'] / 'config.json').read_text())
    assert cfg.architecture == config['architecture'] == ARCH
    assert cfg.num_classes == config['num_classes']
    assert cfg.label_names == tuple(config['label_names'])
    for key in ('dataset', 'threat_model', 'hf_hub_id'):
        assert getattr(cfg, key) == config['pretrained_cfg'][key]
    assert list(cfg.input_size) == config['pretrained_cfg']['input_size']
    assert list(cfg.input_mean) == config['pretrained_cfg']['input_mean']
    assert cfg.file == str(card['cards'] / NAME / 'model.safetensors')
    rz = ModelCard.load(card['folder'] / 'README.md').data.to_dict()['robust_zoo']
    assert (rz['threat_model'], rz['sha256']) == \
        (cfg.threat_model, json.loads(card['index'].read_text())[NAME]['sha256'])


def test_the_default_tag_is_the_familys_own_dataset_then_the_lowest_seed(run, tmp_path, published):
    """Weights for another dataset never become `robust_zoo/<arch>`'s default, however their tags sort."""
    cards, index = tmp_path / 'model_cards', tmp_path / 'published.json'
    src = tmp_path / 'run-digits'
    shutil.copytree(run['dir'], src)
    args = yaml.safe_load((src / 'args.yaml').read_text())
    (src / 'args.yaml').write_text(yaml.safe_dump(dict(args, dataset='digits'), sort_keys=False))
    record = copy.deepcopy(run['records'][1])
    record['threat_model'] = dict(record['threat_model'], id='digits-linf', dataset='digits')
    folder = publish.write_card_repo(src, tag='digits_s0', evaluations=[record], out_root=cards, index_path=index)
    for seed in (1, 0):
        _seed_card(run, tmp_path, cards, index, arch=ARCH, seed=seed, robust=0.5, clean=0.8)
    assert sorted(json.loads(index.read_text()))[0] == f'{ARCH}.digits_s0'
    published(index, cards)
    cfg = get_pretrained_cfg(ARCH)
    assert (cfg.tag, cfg.dataset, cfg.threat_model) == ('fmnist_s0', 'fashion-mnist', 'fashion-mnist-linf')
    assert cfg.label_names == FASHION_MNIST_CLASSES
    assert demo.default_published_model() == f'{ARCH}.fmnist_s0'  # the main job evaluates the default tag
    # the digits card names the digits, not the class names its architecture's default cfg carries
    config = json.loads((folder / 'config.json').read_text())
    assert config['label_names'] == [str(d) for d in range(10)]
    assert get_pretrained_cfg(f'{ARCH}.digits_s0').label_names == tuple(str(d) for d in range(10))
    assert "UCI's Optical Recognition of Handwritten Digits" in (folder / 'README.md').read_text()


def test_card_shows_the_evaluators_accuracy_vs_steps_and_eps_curves(run, tmp_path):
    record = copy.deepcopy(run['records'][0])
    record['checks'] = [
        dict(name='steps convergence', status='PASS', detail='flat',
             data=dict(steps=[10, 50, 200], accuracy=[0.6, 0.55, 0.55], n=40, eps=0.1, norm='Linf')),
        dict(name='eps sweep', status='PASS', detail='falls to 0',
             data=dict(eps=[0.0, 0.1, 0.5], accuracy=[1.0, 0.55, 0.0], threat_eps=0.1, norm='Linf', chance=0.1,
                       clean=1.0, n=40, steps=20))]
    kwargs = dict(tag='curves_s0', out_root=tmp_path / 'cards', index_path=tmp_path / 'published.json')
    folder = publish.write_card_repo(run['dir'], evaluations=[run['records'][1], record], **kwargs)
    text = (folder / 'README.md').read_text()
    for stem in ('accuracy_vs_steps', 'accuracy_vs_eps'):
        assert (folder / f'{stem}.png').read_bytes()[:4] == b'\x89PNG' and f'({stem}.png)' in text
    assert 'robust accuracy vs PGD steps (the steps-convergence check), on its 40 probe points' in text
    folder = publish.write_card_repo(run['dir'], evaluations=[run['records'][1]], force=True, keep_evaluations=False,
                                     **kwargs)  # no curves: no stale plots
    assert not (folder / 'accuracy_vs_steps.png').exists()
    assert 'accuracy_vs_eps' not in (folder / 'README.md').read_text()


def test_card_headline_is_the_evaluation_on_the_most_test_images(run, tmp_path):
    """A zoo card holds the run's final evaluation (1,000 images) and PGD-20 on all 10,000: the headline states the
    more precise one, whatever the records' order, and points to the others."""
    small, large = run['records'][1], run['records'][0]  # 20 and 50 test images
    folder = publish.write_card_repo(run['dir'], tag='headline_s0', evaluations=[small, large],
                                     out_root=tmp_path / 'cards', index_path=tmp_path / 'published.json')
    headline = next(line for line in (folder / 'README.md').read_text().splitlines() if line.startswith('Under the'))
    assert f"on the first {large['n_examples']} test images" in headline
    assert f"robust accuracy {100 * large['robust_accuracy']:.1f}%" in headline and '(1 more) is under' in headline
    entry = json.loads((tmp_path / 'published.json').read_text())[f'{ARCH}.headline_s0']
    assert (entry['clean_accuracy'], entry['robust_accuracy'], entry['n_examples']) == \
        (large['clean_accuracy'], large['robust_accuracy'], large['n_examples']), 'the index states the headline'


def test_a_card_states_the_settings_of_an_autoattack_subset(run, card, tmp_path):
    record = copy.deepcopy(run['records'][1])
    record['attacks'] = {'apgd-ce+apgd-t': record['attacks']['pgd-20']}
    folder = publish.write_card_repo(run['dir'], tag='apgd_s0', evaluations=[run['records'][0], record],
                                 out_root=tmp_path / 'cards', index_path=tmp_path / 'published.json')
    text = (folder / 'README.md').read_text()
    assert "| 2 | `fashion-mnist-linf` | Linf | 0.1 | apgd-ce+apgd-t | 20 |" in text  # numbered as its checks are
    assert 'Sanity checks of record 2 (`fashion-mnist-linf`, n = 20' in text
    assert "apgd-ce+apgd-t: AutoAttack's attacks alone" in text and 'APGD-CE 1 restart, APGD-T 9 target classes' in text
    assert "attacks alone" not in (card['folder'] / 'README.md').read_text()  # PGD only: no such note
    # the whole of AutoAttack standard in the records: no limitation on missing AutoAttack parts is left
    record['attacks'] = {'autoattack-standard': record['attacks']['apgd-ce+apgd-t']}
    folder = publish.write_card_repo(run['dir'], tag='aa_s0', evaluations=[run['records'][0], record],
                                 out_root=tmp_path / 'cards', index_path=tmp_path / 'published.json')
    limits = (folder / 'README.md').read_text().split('## Limitations')[1]
    assert 'No AutoAttack evaluation' not in limits and 'Only part of AutoAttack' not in limits


def test_a_check_that_did_not_pass_is_listed_under_limitations(run, tmp_path):
    record = copy.deepcopy(run['records'][0])
    record['checks'] = [dict(name='black box', status='WARN', detail='Square breaks 5 points PGD missed'),
                        dict(name='budget', status='PASS', detail='all within eps')]
    folder = publish.write_card_repo(run['dir'], tag='warn_s0', evaluations=[record], out_root=tmp_path / 'cards',
                                 index_path=tmp_path / 'published.json')
    limits = (folder / 'README.md').read_text().split('## Limitations')[1].split('## License')[0]
    assert '- Sanity check `black box` of record 1 (WARN): Square breaks 5 points PGD missed' in limits
    assert 'budget' not in limits


def test_three_routes_load_the_same_weights(card, run, published, tmp_path):
    published(card['index'], card['cards'])
    x = _x()
    expected = run['model'](x)
    by_tag = timm.create_model(f'robust_zoo/{NAME}', pretrained=True).eval()
    assert by_tag.pretrained_cfg['file'] == str(card['cards'] / NAME / 'model.safetensors')
    default = timm.create_model(f'robust_zoo/{ARCH}', pretrained=True).eval()
    local = timm.create_model(f"local-dir:{card['folder']}", pretrained=True).eval()
    cache, _ = _hub_cache(tmp_path, card['folder'])
    from_hub = timm.create_model(f'hf-hub:{HUB_ID}', pretrained=True, cache_dir=cache).eval()
    assert from_hub.pretrained_cfg['hf_hub_id'] == HUB_ID and local.pretrained_cfg['source'] == 'local-dir'
    for model in (by_tag, default, local, from_hub):
        assert model.pretrained_cfg['threat_model'] == 'fashion-mnist-linf'
        torch.testing.assert_close(model(x), expected, rtol=0, atol=0)


def test_registry_name_falls_back_to_the_hub_cache(card, run, published, tmp_path):
    published(card['index'], tmp_path / 'no_cards')  # a pip install: no model_cards/ folder
    assert get_pretrained_cfg(NAME).file is None
    cache, snapshot = _hub_cache(tmp_path, card['folder'])
    model = timm.create_model(f'robust_zoo/{NAME}', pretrained=True, cache_dir=cache).eval()
    assert Path(model.pretrained_cfg['file']).resolve() == (snapshot / 'model.safetensors').resolve()
    torch.testing.assert_close(model(_x()), run['model'](_x()), rtol=0, atol=0)


def test_missing_weights_offline_say_where_they_were_looked_for(card, published, tmp_path):
    published(card['index'], tmp_path / 'no_cards')
    with pytest.raises(_hub.PublishedWeightsError, match='HF_HUB_OFFLINE=1 is set') as info:
        timm.create_model(f'robust_zoo/{NAME}', pretrained=True, cache_dir=tmp_path / 'empty-cache')
    assert f'robust_zoo/{NAME}' in str(info.value) and str(tmp_path / 'no_cards' / NAME) in str(info.value)
    # a name without published weights keeps its own error
    with pytest.raises(RuntimeError, match='No pretrained weights are published for robust_zoo/mlp3_silu_at'):
        timm.create_model('robust_zoo/mlp3_silu_at', pretrained=True)


def test_corrupt_weights_are_refused_on_every_route(card, published, tmp_path):
    cards = tmp_path / 'model_cards'
    shutil.copytree(card['folder'], cards / NAME)
    weights = cards / NAME / 'model.safetensors'
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in a weight: still a valid safetensors file
    weights.write_bytes(bytes(data))
    published(card['index'], cards)
    with pytest.raises(_hub.PublishedWeightsError, match='not the published weights') as info:
        timm.create_model(f'robust_zoo/{NAME}', pretrained=True)
    assert str(weights) in str(info.value) and 'git checkout' in str(info.value)
    assert _sha(weights) in str(info.value)
    with pytest.raises(_hub.PublishedWeightsError, match='not the published weights'):
        timm.create_model(f'local-dir:{cards / NAME}', pretrained=True)
    cache, _ = _hub_cache(tmp_path, cards / NAME)
    with pytest.raises(_hub.PublishedWeightsError, match='Hugging Face cache'):
        timm.create_model(f'hf-hub:{HUB_ID}', pretrained=True, cache_dir=cache)
    # weights given on purpose are the caller's: no published hash applies
    model = timm.create_model(f'robust_zoo/{NAME}', pretrained=True, pretrained_cfg_overlay=dict(file=str(weights)))
    assert model.pretrained_cfg['file'] == str(weights)


def test_truncated_local_weights_are_refused(card, published, tmp_path):
    cards = tmp_path / 'model_cards'
    shutil.copytree(card['folder'], cards / NAME)
    weights = cards / NAME / 'model.safetensors'
    weights.write_bytes(weights.read_bytes()[:100])
    published(card['index'], cards)
    with pytest.raises(_hub.PublishedWeightsError, match='corrupt, truncated or was replaced'):
        timm.create_model(f'robust_zoo/{NAME}', pretrained=True)


def test_a_broken_index_is_a_clear_error(tmp_path, published):
    bad = tmp_path / 'published.json'
    bad.write_text(json.dumps({'x.y': {'architecture': 'x', 'tag': 'y'}}))
    with pytest.raises(ValueError, match="entry 'x.y' lacks"):
        published(bad)
    bad.write_text(json.dumps({'resnet18_relu_at.t': {'architecture': 'resnet18_relu_at', 'tag': 't',
                                                      'hf_hub_id': 'a/b', 'sha256': '0'}}))
    with pytest.raises(ValueError, match='take no published cfgs'):
        published(bad)


# --- pushing ------------------------------------------------------------------------------------------------

@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError('network access in a test')
    monkeypatch.setattr(socket.socket, 'connect', refuse)
    monkeypatch.setattr(huggingface_hub, 'HfApi', mock.Mock(side_effect=AssertionError('HfApi in a dry run')))


def test_push_dry_run_lists_files_sizes_hashes_and_uploads_nothing(card, no_network, capsys):
    files = publish.push_card_repo(card['folder'], HUB_ID)
    on_disk = sorted(p for p in card['folder'].iterdir() if p.is_file())
    assert files == [(p.name, p.stat().st_size, _sha(p)) for p in on_disk]
    assert main(['push', str(card['folder'])]) == 0  # the repo id defaults to the card's
    out = capsys.readouterr().out
    for name, size, sha in files:
        assert f'{size:>12,}  {sha}  {name}' in out
    assert 'dry run' in out and 'nothing was uploaded' in out and f'https://huggingface.co/{HUB_ID}' in out


def test_push_uploads_with_the_token_and_never_shows_it(card, monkeypatch, capsys, caplog):
    secret = 'hf_' + 'x7Q' * 10
    monkeypatch.setenv('HF_TOKEN', secret)
    api_cls = mock.Mock()
    monkeypatch.setattr(huggingface_hub, 'HfApi', api_cls)
    caplog.set_level(logging.DEBUG)
    assert main(['push', str(card['folder']), '--repo-id', HUB_ID, '--no-dry-run', '--private']) == 0
    api_cls.assert_called_once_with(token=secret)
    api = api_cls.return_value
    api.create_repo.assert_called_once_with(HUB_ID, repo_type='model', private=True, exist_ok=True)
    kwargs = api.upload_folder.call_args.kwargs
    assert (kwargs['repo_id'], kwargs['folder_path'], kwargs['repo_type']) == (HUB_ID, str(card['folder']), 'model')
    assert sorted(kwargs['allow_patterns']) == sorted(p.name for p in card['folder'].iterdir())
    captured = capsys.readouterr()
    assert f'uploaded {len(kwargs["allow_patterns"])} files' in captured.out
    assert secret not in captured.out + captured.err + caplog.text


def test_push_without_a_token_is_a_clear_error(card, monkeypatch, no_network, capsys):
    monkeypatch.delenv('HF_TOKEN', raising=False)
    with pytest.raises(RuntimeError, match='no Hugging Face token: set HF_TOKEN'):
        publish.push_card_repo(card['folder'], HUB_ID, dry_run=False)
    assert main(['push', str(card['folder']), '--no-dry-run']) == 2
    err = capsys.readouterr().err
    assert err.startswith('robust-zoo: error: no Hugging Face token') and err.count('\n') == 1


@pytest.mark.parametrize('repo_id, message', [
    ('noslash', 'must be ORG/NAME'), ('a/b/c', 'must be ORG/NAME'), ('a--b/c', 'must be ORG/NAME'),
    (f'{ORG}/other', 'would publish wrong loading instructions'),
    (f'someone/{NAME}', 'would publish wrong loading instructions'),
])
def test_push_checks_the_repo_id(card, no_network, repo_id, message):
    with pytest.raises(ValueError, match=message):
        publish.push_card_repo(card['folder'], repo_id)


# --- the leaderboard ----------------------------------------------------------------------------------------

def _seed_card(run, tmp_path, cards, index, *, arch, seed, robust, clean, summary=None, tag='fmnist', **args_extra):
    src = tmp_path / f'run-{arch}-{tag}-{seed}'
    shutil.copytree(run['dir'], src)
    args = yaml.safe_load((src / 'args.yaml').read_text())
    (src / 'args.yaml').write_text(yaml.safe_dump(dict(args, model=f'robust_zoo/{arch}', seed=seed, **args_extra),
                                                  sort_keys=False))
    if summary is not None:
        (src / 'summary.csv').write_text(SUMMARY_HEAD + ''.join(
            f'{e},1.0,{train},0.8,60.0,0.8,{val},0.0\n' for e, (train, val) in enumerate(summary)))
    record = copy.deepcopy(run['records'][1])  # one attack (pgd-20), n = 20
    record.update(model=f'robust_zoo/{arch}', seed=seed, clean_accuracy=clean, robust_accuracy=robust,
                  attacks={'pgd-20': robust}, confidence_interval=list(wilson_interval(round(robust * 20), 20)))
    return publish.write_card_repo(src, tag=f'{tag}_s{seed}', evaluations=[record], out_root=cards, index_path=index)


SUMMARY_HEAD = 'epoch,train_loss,train_adv_acc,train_clean_acc,train_img_per_sec,eval_clean_acc,eval_robust_acc,lr\n'


def test_a_run_that_overfit_catastrophically_is_flagged_on_its_card_the_leaderboard_and_the_plot(run, tmp_path,
                                                                                                 monkeypatch):
    cards, index = tmp_path / 'model_cards', tmp_path / 'published.json'
    single_step = dict(attack='n-fgsm', val_attack='pgd-10')
    for seed, robust in ((0, 0.70), (1, 0.75)):
        _seed_card(run, tmp_path, cards, index, arch='mlp3_relu_at', seed=seed, robust=robust, clean=0.8,
                   summary=[(0.57, 0.69), (0.74, 0.72)], **single_step)
        _seed_card(run, tmp_path, cards, index, arch='mlp3_silu_at', seed=seed, robust=robust - 0.05, clean=0.8,
                   summary=[(0.57, 0.69), (0.74, 0.72)], **single_step)
    # seed 2 of ReLU: the training attack's accuracy climbs while validation PGD-10 stays low, last epoch kept
    folder = _seed_card(run, tmp_path, cards, index, arch='mlp3_relu_at', seed=2, robust=0.2, clean=0.75,
                        summary=[(0.62, 0.37), (0.81, 0.37)], **single_step)
    card = ModelCard.load(folder / 'README.md')
    co = card.data.to_dict()['robust_zoo']['catastrophic_overfitting']
    assert co == dict(epochs=[0, 1], kept_epoch=1, kept_weights_affected=True, gap_threshold=0.2, epoch=1,
                      train_adv_acc=0.81, val_robust_acc=0.37)
    assert ('**This run overfit catastrophically** (Wong et al. 2020): at epoch 1 its n-fgsm training accuracy 0.810 '
            'was more than 0.2 above its validation pgd-10 accuracy 0.370') in card.text
    assert 'catastrophic_overfitting' not in ModelCard.load(cards / 'mlp3_relu_at.fmnist_s0' / 'README.md').text
    published = _pretrained.load_published(index)  # the index carries the flag to `robust-zoo list --results`
    assert published['mlp3_relu_at.fmnist_s2']['caveats'] == {'catastrophic_overfitting': True}
    assert 'caveats' not in published['mlp3_relu_at.fmnist_s0']

    relu, silu = lb.leaderboard(cards)
    assert list(relu['overfit']) == ['mlp3_relu_at.fmnist_s2'] and silu['overfit'] == {}
    assert relu['robust']['pgd-20, n=20']['repos'] == [f'mlp3_relu_at.fmnist_s{s}' for s in range(3)]
    assert relu['robust']['pgd-20, n=20']['values'] == [0.7, 0.75, 0.2]  # every seed counts in the row
    assert relu['robust_without_overfit']['pgd-20, n=20']['values'] == [0.7, 0.75]
    assert silu['robust_without_overfit'] is None
    table = lb.leaderboard_markdown([relu, silu])
    assert '| mlp3 | `relu` (co) |' in table and '| mlp3 | `silu` |' in table
    assert ('(co) Catastrophic overfitting (Wong et al. 2020) in the shipped weights of `mlp3_relu_at.fmnist_s2` '
            '(epoch 1: training attack accuracy 81.0, validation 37.0)') in table
    # the plot marks the row as the table does and draws the seed that overfit as a red cross
    import matplotlib.pyplot as plt
    figures = []
    monkeypatch.setattr(plt, 'close', figures.append)
    tables.plot_leaderboard([relu, silu], tmp_path / 'lb.png')
    (ax,) = figures[0].axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ['relu (co)', 'silu']
    crosses = [line for line in ax.get_lines() if line.get_marker() == 'x']
    assert [list(line.get_ydata()) for line in crosses] == [[0.75], [0.2]]  # its clean and robust accuracy
    assert sum(len(line.get_ydata()) for line in ax.get_lines() if line.get_marker() == '.') == 2 * 2 + 2 * 2


def test_early_stopping_before_catastrophic_overfitting_keeps_clean_weights(run, tmp_path):
    cards, index = tmp_path / 'model_cards', tmp_path / 'published.json'
    folder = _seed_card(run, tmp_path, cards, index, arch='mlp3_relu_at', seed=0, robust=0.7, clean=0.8,
                        summary=[(0.72, 0.70), (0.78, 0.39), (0.83, 0.38)], attack='n-fgsm', val_attack='pgd-10',
                        early_stop_robust=True)
    src = tmp_path / 'run-mlp3_relu_at-fmnist-0'
    final = json.loads((src / 'final_eval.json').read_text())
    (src / 'final_eval.json').write_text(json.dumps(dict(final, best=dict(robust_acc=0.70, epoch=0))))
    first = json.loads((folder / 'eval_results.json').read_text())[0]
    folder = publish.write_card_repo(src, tag='fmnist_s0', evaluations=[first], out_root=cards, index_path=index,
                                     force=True)
    card = ModelCard.load(folder / 'README.md')
    co = card.data.to_dict()['robust_zoo']['catastrophic_overfitting']
    assert co['epochs'] == [1, 2] and co['kept_epoch'] == 0 and not co['kept_weights_affected']
    assert 'Catastrophic overfitting appeared at epoch(s) 1, 2' in card.text and 'from epoch 0, before it.' in card.text
    (row,) = lb.leaderboard(cards)
    assert row['overfit'] == {} and '(co)' not in lb.leaderboard_markdown([row])
    caveats = _pretrained.load_published(index)['mlp3_relu_at.fmnist_s0'].get('caveats', {})
    assert 'catastrophic_overfitting' not in caveats


def test_one_architecture_trained_with_two_attacks_gets_separate_rows(run, tmp_path):
    cards, index = tmp_path / 'model_cards', tmp_path / 'published.json'
    for arch, robust in (('mlp3_relu_at', 0.65), ('mlp3_capped_relu_at', 0.40)):
        _seed_card(run, tmp_path, cards, index, arch=arch, seed=0, robust=robust, clean=0.8, attack='n-fgsm')
        _seed_card(run, tmp_path, cards, index, arch=arch, seed=0, robust=robust + 0.05, clean=0.8, attack='pgd',
                   tag='fmnist_pgd')
    rows = lb.leaderboard(cards)
    assert [(r['activation'], r['train_attack'], r['repos']) for r in rows] == [
        ('capped_relu', 'n-fgsm', ['mlp3_capped_relu_at.fmnist_s0']), ('relu', 'n-fgsm', ['mlp3_relu_at.fmnist_s0']),
        ('capped_relu', 'pgd', ['mlp3_capped_relu_at.fmnist_pgd_s0']), ('relu', 'pgd', ['mlp3_relu_at.fmnist_pgd_s0'])]
    table = lb.leaderboard_markdown(rows)
    assert '| mlp3 (n-fgsm training) | `relu` |' in table and '| mlp3 (pgd training) | `capped_relu` |' in table
    # one training attack per architecture: no label
    assert '| mlp3 | `relu` |' in lb.leaderboard_markdown([r for r in rows if r['train_attack'] == 'pgd'])


def test_leaderboard_aggregates_seeds_per_activation(run, tmp_path):
    cards, index = tmp_path / 'model_cards', tmp_path / 'published.json'
    for seed, robust, clean in ((0, 0.5, 0.8), (1, 0.6, 0.85), (2, 0.7, 0.9)):
        _seed_card(run, tmp_path, cards, index, arch='mlp3_relu_at', seed=seed, robust=robust, clean=clean)
    _seed_card(run, tmp_path, cards, index, arch='mlp3_silu_at', seed=0, robust=0.45, clean=0.75)
    rows = lb.leaderboard(cards)
    assert [(r['base_architecture'], r['activation'], r['seeds']) for r in rows] == [
        ('mlp3', 'relu', [0, 1, 2]), ('mlp3', 'silu', [0])]
    relu, silu = rows
    pgd = relu['robust']['pgd-20, n=20']
    assert pgd['n_seeds'] == 3 and pgd['n_examples'] == 20 and pgd['values'] == [0.5, 0.6, 0.7]
    assert pgd['mean'] == pytest.approx(0.6) and pgd['sd'] == pytest.approx(0.1)
    assert (pgd['min'], pgd['max']) == (0.5, 0.7)
    assert pgd['wilson95'] == pytest.approx(wilson_interval(12, 20))
    # the interval is at the mean itself, also when the mean of the seeds is not k / n
    assert lb.seed_stat([0.5, 0.55], 20)['wilson95'] == pytest.approx(wilson_interval(10.5, 20))
    assert lb.seed_stat([0.5, 0.55], 20)['wilson95'] != pytest.approx(wilson_interval(10, 20))
    assert relu['clean']['mean'] == pytest.approx(0.85) and relu['clean']['n_examples'] == 20
    assert silu['robust']['pgd-20, n=20']['sd'] is None and silu['repos'] == ['mlp3_silu_at.fmnist_s0']

    table = lb.leaderboard_markdown(rows)
    lo, hi = wilson_interval(12, 20)
    assert '| mlp3 | `relu` | `fashion-mnist-linf` | 3 | 85.0 ± 5.0 ' in table
    assert f'60.0 ± 10.0 [{100 * lo:.1f}, {100 * hi:.1f}]' in table
    assert '| mlp3 | `silu` | `fashion-mnist-linf` | 1 | 75.0 [' in table

    readme = tmp_path / 'README.md'
    readme.write_text(f'# top\n{lb.PUBLISHED_START}\nstale list\n{lb.PUBLISHED_END}\n\n'
                      f'{lb.LEADERBOARD_START}\nold table\n{lb.LEADERBOARD_END}\n\n## after\n')
    assert main(['leaderboard', '--cards', str(cards), '--page', str(readme), '--png', str(tmp_path / 'lb.png')]) == 0
    text = readme.read_text()
    assert text.startswith(f'# top\n{lb.PUBLISHED_START}\n4 models, named `robust_zoo/<architecture>.<tag>`: '
                           '`mlp3_relu_at` (fmnist_s0, fmnist_s1, fmnist_s2); `mlp3_silu_at` (fmnist_s0).\n'
                           f'{lb.PUBLISHED_END}\n\n')
    assert 'stale list' not in text and text.endswith(f'{lb.LEADERBOARD_END}\n\n## after\n')
    assert 'old table' not in text and table in text and '![leaderboard](lb.png)' in text
    assert (tmp_path / 'lb.png').read_bytes()[:4] == b'\x89PNG'


def test_leaderboard_flags_models_whose_sanity_checks_did_not_pass(run, tmp_path):
    cards, index = tmp_path / 'model_cards', tmp_path / 'published.json'
    _seed_card(run, tmp_path, cards, index, arch='mlp3_relu_at', seed=0, robust=0.5, clean=0.8)
    record = copy.deepcopy(run['records'][0])
    record['model'] = 'robust_zoo/mlp3_silu_at'
    record['checks'] = [dict(name='black box', status='WARN', detail='Square beat PGD'),
                        dict(name='budget', status='PASS', detail='ok')]
    src = tmp_path / 'run-silu'
    shutil.copytree(run['dir'], src)
    args = yaml.safe_load((src / 'args.yaml').read_text())
    (src / 'args.yaml').write_text(yaml.safe_dump(dict(args, model='robust_zoo/mlp3_silu_at'), sort_keys=False))
    publish.write_card_repo(src, tag='fmnist_s0', evaluations=[record], out_root=cards, index_path=index)
    relu, silu = lb.leaderboard(cards)
    assert relu['checks'] == {} and silu['checks'] == {'mlp3_silu_at.fmnist_s0': ['black box WARN']}
    table = lb.leaderboard_markdown([relu, silu])
    assert '| mlp3 | `silu` (!) |' in table and '| mlp3 | `relu` |' in table
    assert '(!) A sanity check of the evaluator did not pass for `mlp3_silu_at.fmnist_s0` (black box WARN)' in table
    published = _pretrained.load_published(index)
    assert published['mlp3_silu_at.fmnist_s0']['caveats'] == {'checks_not_passed': ['black box WARN']}
    assert 'caveats' not in published['mlp3_relu_at.fmnist_s0']


def test_the_sanity_note_gives_a_stronger_attacks_number_beside_pgd_on_the_same_images():
    """A flagged model that also ran APGD gets APGD's number beside PGD's on the same test images in the (!) note,
    so the reader sees whether the stronger attack confirms it; a flagged model without one keeps the caveat."""
    relu = fixed_row('relu', 0.74, 0.002, 2, n=10000)
    relu['robust'] = {'pgd-20, n=10000': lb.seed_stat([0.74, 0.741], 10000, ['relu.s0', 'relu.s1'], [0, 1]),
                      'pgd-20, n=1000': lb.seed_stat([0.752, 0.749], 1000, ['relu.s0', 'relu.s1'], [0, 1]),
                      'apgd-ce+apgd-t, n=1000': lb.seed_stat([0.731], 1000, ['relu.s0'], [0])}
    relu['checks'] = {'relu.s0': ['black box WARN'], 'relu.s1': ['restarts WARN']}
    table = lb.leaderboard_markdown([relu])
    assert ('`relu.s0` (black box WARN, apgd-ce+apgd-t on 1000 test images: 73.1, against pgd-20 75.2); '
            '`relu.s1` (restarts WARN): its robust accuracy may be overstated until a stronger attack (APGD, '
            "AutoAttack) confirms it; where one ran, its number is given beside the weaker attacks' on the same test "
            'images; see the card.') in table
    relu['robust'] = {'autoattack-standard, n=500': lb.seed_stat([0.72], 500, ['relu.s0'], [0]),  # cards list by n
                      'pgd-20, n=500': lb.seed_stat([0.758], 500, ['relu.s0'], [0]), **relu['robust']}
    assert ('`relu.s0` (black box WARN, apgd-ce+apgd-t on 1000 test images: 73.1, against pgd-20 75.2, '
            'autoattack-standard on 500 test images: 72.0, against pgd-20 75.8)') in lb.leaderboard_markdown([relu])
    del relu['robust']['apgd-ce+apgd-t, n=1000'], relu['robust']['autoattack-standard, n=500']
    assert "where one ran" not in lb.leaderboard_markdown([relu])


def test_a_run_stopped_early_says_which_epoch_it_kept_on_its_card_and_the_leaderboard(run, tmp_path):
    src = tmp_path / 'run-early'
    shutil.copytree(run['dir'], src)
    args = yaml.safe_load((src / 'args.yaml').read_text())
    (src / 'args.yaml').write_text(yaml.safe_dump(dict(args, epochs=4, early_stop_robust=True), sort_keys=False))
    final = json.loads((src / 'final_eval.json').read_text())
    (src / 'final_eval.json').write_text(json.dumps(dict(final, epochs_run=3, stopped_early=True,
                                                         best=dict(robust_acc=0.673, epoch=0))))
    cards = tmp_path / 'model_cards'
    folder = publish.write_card_repo(src, tag='fmnist_s0', out_root=cards, index_path=tmp_path / 'published.json')
    text = (folder / 'README.md').read_text()
    assert '| epochs | 4 (ran 3, stopped early: catastrophic overfitting) |' in text
    assert _pretrained.load_published(tmp_path / 'published.json')[NAME]['caveats'] == {'stopped_early': True}
    assert 'early stopping on): epoch 0 (counted from 0), validation pgd-10 accuracy 0.673 |' in text
    (row,) = lb.leaderboard(cards)
    assert row['stopped_early'] == {NAME: (0, 3)}
    table = lb.leaderboard_markdown([row])
    assert '| mlp3 | `relu` (e) |' in table and f'`{NAME}` (epoch 0 of 3 run, counted from 0)' in table


def test_leaderboard_needs_its_markers(tmp_path, capsys):
    readme = tmp_path / 'README.md'
    readme.write_text('# no markers\n')
    assert main(['leaderboard', '--cards', str(tmp_path), '--readme', str(readme)]) == 2
    assert 'leaderboard:start' in capsys.readouterr().err
    assert readme.read_text() == '# no markers\n'
    with pytest.raises(ValueError, match='does not exist'):  # a typo in --cards never reads as "no models"
        lb.leaderboard(tmp_path / 'none')



# --- Sparta transfer: cards of models with a frozen bank, and the transfer table ---------------------------

def _sparta_trained_like(arch, seed=0, **kwargs):
    """A Sparta model whose units all differ (as after training), so a mapping or provenance mistake shows."""
    torch.manual_seed(seed)
    model = timm.create_model(f'robust_zoo/{arch}', **kwargs)
    if 'sparta_bank' not in kwargs:
        with torch.no_grad():
            for i, unit in enumerate(robust_zoo.sparta_bank.sparta_units(model).values()):
                unit.beta.fill_(1 + i + seed)
                unit.attn.weight.normal_()
    return model


def _transfer_card(run, tmp_path, cards, index, *, arch, tag, robust, clean, model=None, model_kwargs=None,
                   seed=0):
    """A card for `arch` with given numbers (n = 20) from a run folder holding `model`'s weights."""
    src = tmp_path / f'run-{arch}-{tag}'
    shutil.copytree(run['dir'], src)
    model = model if model is not None else timm.create_model(f'robust_zoo/{arch}')
    save_weights(model.state_dict(), src / 'model.safetensors', dict(arch=f'robust_zoo/{arch}', epoch='0'))
    args = yaml.safe_load((src / 'args.yaml').read_text())
    (src / 'args.yaml').write_text(yaml.safe_dump(dict(args, model=f'robust_zoo/{arch}', seed=seed,
                                                       model_kwargs=model_kwargs or {}), sort_keys=False))
    record = copy.deepcopy(run['records'][1])
    record.update(model=f'robust_zoo/{arch}', seed=seed, clean_accuracy=clean, robust_accuracy=robust,
                  attacks={'pgd-20': robust}, confidence_interval=list(wilson_interval(round(robust * 20), 20)),
                  weights_digest=parameter_digest(model))  # a record of these weights
    return publish.write_card_repo(src, tag=tag, evaluations=[record], out_root=cards, index_path=index)


@pytest.fixture
def source_card(run, tmp_path):
    """A published ResNet-20 Sparta card (its folder ships sparta_bank.safetensors)."""
    cards, index = tmp_path / 'model_cards', tmp_path / 'published.json'
    folder = _transfer_card(run, tmp_path, cards, index, arch='resnet20_sparta_at', tag='fmnist_s0', robust=0.5,
                            clean=0.8, model=_sparta_trained_like('resnet20_sparta_at'))
    return dict(folder=folder, cards=cards, index=index)


def test_a_transferred_model_card_names_its_published_bank(run, tmp_path, source_card, published):
    bank_file = source_card['folder'] / 'sparta_bank.safetensors'
    assert bank_file.is_file()
    copy_elsewhere = tmp_path / 'runs' / 'sparta_bank.safetensors'  # as the grid loads it: a run's own bank file
    copy_elsewhere.parent.mkdir()
    robust_zoo.sparta_bank.save_bank(_sparta_trained_like('resnet20_sparta_at'), copy_elsewhere,
                                     run='resnet20_sparta_at-s0')
    model = timm.create_model('robust_zoo/resnet32_sparta_at', sparta_bank=str(copy_elsewhere))
    folder = _transfer_card(run, tmp_path, source_card['cards'], source_card['index'], arch='resnet32_sparta_at',
                            tag='fmnist_bank_s0', robust=0.55, clean=0.8, model=model,
                            model_kwargs={'sparta_bank': str(copy_elsewhere)})
    card = lb._card_results(folder / 'README.md')
    bank = card['sparta_bank']
    assert bank['source'] == 'resnet20_sparta_at.fmnist_s0' and bank['frozen'] and bank['units_equal_bank']
    assert (bank['source_model'], bank['source_dataset'], bank['mapping'], bank['n_units']) == (
        'resnet20_sparta_at', 'fashion-mnist', 'relative-depth', 31)
    text = (folder / 'README.md').read_text()
    assert '## Sparta bank (transferred)' in text and '| `stages.2.4.act2` | `stages.2.2.act2` |' in text
    assert '--model-kwargs sparta_bank=resnet20_sparta_at.fmnist_s0`' in text
    assert not (folder / 'sparta_bank.safetensors').exists(), 'a frozen bank is published once, by its source'
    # the published transferred model loads by name with the bank's values in it
    published(source_card['index'], source_card['cards'])
    loaded = timm.create_model(f'local-dir:{folder}', pretrained=True)
    units, _ = robust_zoo.sparta_bank.read_bank(bank_file)
    assert torch.equal(robust_zoo.sparta_bank.sparta_units(loaded)['stages.2.4.act2'].attn.weight,
                       units['stages.2.2.act2']['attn.weight'])


def test_a_transferred_card_refuses_an_unpublished_or_retrained_bank(run, tmp_path, source_card):
    other = robust_zoo.sparta_bank.save_bank(_sparta_trained_like('resnet20_sparta_at', seed=5),
                                             tmp_path / 'b.safetensors')
    model = timm.create_model('robust_zoo/resnet32_sparta_at', sparta_bank=str(other))
    with pytest.raises(ValueError, match='is not published .*publish the run it comes from first'):
        _transfer_card(run, tmp_path, source_card['cards'], source_card['index'], arch='resnet32_sparta_at',
                       tag='fmnist_bank_s0', robust=0.5, clean=0.8, model=model,
                       model_kwargs={'sparta_bank': str(other)})
    bank_file = source_card['folder'] / 'sparta_bank.safetensors'
    model = timm.create_model('robust_zoo/resnet32_sparta_at', sparta_bank=str(bank_file))
    with torch.no_grad():
        robust_zoo.sparta_bank.sparta_units(model)['stages.1.0.act1'].beta.add_(0.01)  # "frozen" units that moved
    with pytest.raises(ValueError, match="Sparta units differ from the bank"):
        _transfer_card(run, tmp_path, source_card['cards'], source_card['index'], arch='resnet32_sparta_at',
                       tag='fmnist_bank_s1', robust=0.5, clean=0.8, model=model,
                       model_kwargs={'sparta_bank': str(bank_file)})


def test_a_transferred_model_is_its_own_leaderboard_row(run, tmp_path, source_card):
    """A frozen-bank model is compared with its target's ReLU and from-scratch arms by the study
    (experiments/sparta_transfer.py): the leaderboard keeps it apart from the from-scratch row and names its bank."""
    cards, index = source_card['cards'], source_card['index']
    bank_file = source_card['folder'] / 'sparta_bank.safetensors'
    for seed, (scratch, banked) in enumerate(((0.50, 0.90), (0.48, 0.92))):
        _transfer_card(run, tmp_path, cards, index, arch='resnet32_sparta_at', tag=f'x_s{seed}', robust=scratch,
                       clean=0.8, seed=seed, model=_sparta_trained_like('resnet32_sparta_at', seed=seed))
        _transfer_card(run, tmp_path, cards, index, arch='resnet32_sparta_at', tag=f'x_bank_s{seed}', robust=banked,
                       clean=0.8, seed=seed, model=timm.create_model('robust_zoo/resnet32_sparta_at',
                                                                     sparta_bank=str(bank_file)),
                       model_kwargs={'sparta_bank': str(bank_file)})
    rows = lb.leaderboard(cards)
    sparta_rows = [r for r in rows if r['base_architecture'] == 'resnet32']
    assert [(r['bank'], r['seeds']) for r in sparta_rows] == [(None, [0, 1]),
                                                              ('resnet20_sparta_at on fashion-mnist', [0, 1])]
    assert sparta_rows[1]['robust']['pgd-20, n=20']['values'] == [0.9, 0.92]
    readme = tmp_path / 'README.md'
    readme.write_text(f'{lb.LEADERBOARD_START}\n{lb.LEADERBOARD_END}\n')
    lb.write_leaderboard(readme, cards_root=cards)
    assert '| resnet32 | `sparta` (frozen bank: resnet20_sparta_at on fashion-mnist) |' in readme.read_text()


# --- the command --------------------------------------------------------------------------------------------

def test_cli_card_writes_into_the_index_in_use(run, tmp_path, published, capsys):
    published(tmp_path / 'published.json', tmp_path / 'model_cards')
    assert main(['card', str(run['dir']), '--tag', 'cli_s0']) == 0
    out = capsys.readouterr().out
    folder = tmp_path / 'model_cards' / f'{ARCH}.cli_s0'
    assert f'wrote {folder}' in out and _sha(folder / 'model.safetensors') in out
    # the index in use was updated and re-registered: the new tag loads at once
    assert robust_zoo.list_models(pretrained=True) == [f'robust_zoo/{ARCH}.cli_s0']
    model = timm.create_model(f'robust_zoo/{ARCH}.cli_s0', pretrained=True).eval()
    torch.testing.assert_close(model(_x()), run['model'](_x()), rtol=0, atol=0)
    assert main(['card', str(run['dir']), '--tag', 'bad.tag']) == 2
    assert main(['card', str(tmp_path / 'nowhere'), '--tag', 't']) == 2
    err = capsys.readouterr().err
    assert 'must be letters' in err and 'is not a finished train/train_at.py run' in err


def test_cli_unpublish_withdraws_the_card_and_its_index_entry(run, tmp_path, published, capsys):
    published(tmp_path / 'published.json', tmp_path / 'model_cards')
    assert main(['card', str(run['dir']), '--tag', 'old_s0']) == 0
    assert main(['card', str(run['dir']), '--tag', 'kept_s0']) == 0
    capsys.readouterr()
    assert main(['unpublish', f'robust_zoo/{ARCH}.old_s0']) == 0
    assert f"removed {tmp_path / 'model_cards' / f'{ARCH}.old_s0'}" in capsys.readouterr().out
    assert not (tmp_path / 'model_cards' / f'{ARCH}.old_s0').exists()
    assert list(_pretrained.load_published()) == [f'{ARCH}.kept_s0']
    assert robust_zoo.list_models(pretrained=True) == [f'robust_zoo/{ARCH}.kept_s0']
    with pytest.raises(RuntimeError, match=rf'Invalid pretrained tag \(old_s0\) for robust_zoo/{ARCH}: its tags are '
                                           'kept_s0'):  # no weights under that tag any more
        timm.create_model(f'robust_zoo/{ARCH}.old_s0', pretrained=True)
    assert main(['unpublish', f'{ARCH}.old_s0']) == 2
    assert re.search(f"robust-zoo: error: '{ARCH}.old_s0' is not published in .*Did you mean {ARCH}.kept_s0\\? "
                     '`robust-zoo list --results` lists', capsys.readouterr().err)


def test_a_sparta_card_publishes_its_bank_loadable_by_name(tmp_path, monkeypatch):
    from robust_zoo.sparta_bank import load_bank, read_bank, sparta_units
    arch = 'mlp3_sparta_at'
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    torch.manual_seed(0)
    model = timm.create_model(f'robust_zoo/{arch}').eval()
    with torch.no_grad():
        for unit in sparta_units(model).values():
            unit.beta.fill_(3.0)
    save_weights(model.state_dict(), run_dir / 'model.safetensors', dict(arch=f'robust_zoo/{arch}'))
    (run_dir / 'args.yaml').write_text(_train_args(['--model', f'robust_zoo/{arch}', '--output', str(run_dir)]))
    x, y = torch.rand(20, 1, 28, 28), torch.arange(20) % 10
    record = evaluate(model, 'fashion-mnist-linf', data=(x, y), attacks=['fgsm'], n_examples=20, checks=False,
                      model_name=f'robust_zoo/{arch}').to_dict()
    folder = publish.write_card_repo(run_dir, tag=TAG, evaluations=[record], out_root=tmp_path / 'cards',
                                 index_path=tmp_path / 'published.json', org=ORG)
    units, meta = read_bank(folder / 'sparta_bank.safetensors')
    assert meta['source_model'] == arch and meta['dataset'] == 'fashion-mnist' and meta['repo'] == f'{arch}.{TAG}'
    assert 'loaded_bank' not in meta  # trained from scratch: an original bank, which transferred cards can name
    assert all(float(u['beta']) == 3.0 for u in units.values())
    text = (folder / 'README.md').read_text()  # the card's own architecture takes its bank by name
    assert f'`timm.create_model("robust_zoo/{arch}", sparta_bank="{arch}.{TAG}")`' in text
    assert 'resnet56' not in text
    monkeypatch.setitem(_pretrained._state, 'cards_dir', str(tmp_path / 'cards'))
    target = timm.create_model(f'robust_zoo/{arch}')
    load_bank(target, f'{arch}.{TAG}', mapping='exact')
    assert all(float(u.beta) == 3.0 and not u.beta.requires_grad for u in sparta_units(target).values())


def test_main_job_evaluates_a_published_model_and_prints_its_table(card, published, run, monkeypatch):
    monkeypatch.setitem(_pretrained._state, 'index_path', str(card['index']))
    published(card['index'], card['cards'])
    assert demo.default_published_model() == NAME
    lines = []
    out = demo.run_published(n_examples=20, attacks=('fgsm',), log=lines.append)
    text = '\n'.join(lines)
    assert f'robust_zoo/{NAME}' in text and '| fgsm |' in text and 'worst case per image' in text
    first = json.loads((card['folder'] / 'eval_results.json').read_text())[0]
    assert f"reports clean {first['clean_accuracy']:.3f} and robust {first['robust_accuracy']:.3f} (fgsm, pgd-20 on " \
           f"the first {first['n_examples']} test images)" in text
    reference = evaluate(run['model'], 'fashion-mnist-linf', attacks=['fgsm'], n_examples=20, checks=False)
    assert out['clean'] == reference.clean_accuracy and out['fgsm'] == reference.attacks['fgsm']
    with pytest.raises(ValueError, match='is not published'):
        demo.run_published('resnet20_silu_at.nope')


def test_the_leaderboard_shows_each_attack_once_at_its_largest_n():
    """A zoo card holds PGD-20 on 1,000 (the run's own) and on all 10,000 images: the table shows the 10,000 one,
    with n in the cell where rows differ, in the header where they agree; the rows keep every protocol."""
    zoo = fixed_row('relu', 0.70)
    zoo['robust'] = {'pgd-20, n=1000': lb.seed_stat([0.75], 1000), 'pgd-20, n=10000': lb.seed_stat([0.741], 10000),
                     'apgd-ce+apgd-t, n=1000': lb.seed_stat([0.73], 1000)}
    digits = fixed_row('sparta', 0.84)
    digits['robust'] = {'pgd-20, n=500': lb.seed_stat([0.84], 500)}
    assert lb.headline_protocols(zoo) == {'pgd-20': zoo['robust']['pgd-20, n=10000'],
                                          'apgd-ce+apgd-t': zoo['robust']['apgd-ce+apgd-t, n=1000']}
    header, _, relu, sparta = lb.leaderboard_markdown([zoo, digits]).splitlines()[:4]
    assert header.endswith('| pgd-20 | apgd-ce+apgd-t, n=1000 |')
    fmt = tables.format_stat
    assert relu.endswith(f"| {fmt(zoo['robust']['pgd-20, n=10000'])} (n=10000) | "
                         f"{fmt(zoo['robust']['apgd-ce+apgd-t, n=1000'])} |") and '75.0 [' not in relu
    assert relu.split(' | ')[-2].startswith('74.1 [73.')
    assert sparta.endswith(f"| {fmt(digits['robust']['pgd-20, n=500'])} (n=500) | – |")
    assert '| pgd-20, n=10000 |' in lb.leaderboard_markdown([zoo]).splitlines()[0]


def test_the_plot_legend_names_the_seeds_of_a_series_that_ran_on_fewer_seeds_than_its_rows():
    """Bars are means over seeds; APGD on seed 0 only must not read as one: its legend entry says (seed 0), as the
    table's cell does, and a series on every seed of its rows says nothing more."""
    rows = [fixed_row('relu', 0.74, 0.01, 3), fixed_row('silu', 0.73, 0.01, 3)]
    for r in rows:
        r['robust']['pgd-20, n=1000']['seeds'] = [0, 1, 2]
        r['robust']['apgd-ce+apgd-t, n=1000'] = lb.seed_stat([0.72], 1000, [f"{r['activation']}.s0"], [0])
    cells = [lb.headline_protocols(r) for r in rows]
    assert tables._series_label('pgd-20', cells, rows) == 'pgd-20, n=1000'
    assert tables._series_label('apgd-ce+apgd-t', cells, rows) == 'apgd-ce+apgd-t, n=1000 (seed 0)'
    single = fixed_row('gelu', 0.72)  # one seed: its APGD cell is no partial one, but the series still is seed 0's
    single['robust']['apgd-ce+apgd-t, n=1000'] = lb.seed_stat([0.71], 1000, ['gelu.s0'], [0])
    assert tables._series_label('apgd-ce+apgd-t', [*cells, lb.headline_protocols(single)], [*rows, single]) == \
        'apgd-ce+apgd-t, n=1000 (seed 0)'
    rows[1]['robust']['apgd-ce+apgd-t, n=1000'] = lb.seed_stat([0.72] * 3, 1000, seeds=[0, 1, 2])
    cells = [lb.headline_protocols(r) for r in rows]
    assert tables._series_label('apgd-ce+apgd-t', cells, rows) == 'apgd-ce+apgd-t, n=1000', 'seeds differ between bars'


def test_a_card_states_a_stronger_attack_beside_pgd_on_the_same_images(run, tmp_path):
    """The headline is the record on the most images (PGD); an APGD or AutoAttack record on fewer images gets its own
    sentence in the summary, with PGD's number on the same images, since the stronger attack is the one to trust."""
    x, y = load_dataset('fashion-mnist', 'test', n=20) if FASHION_MNIST_DIR.exists() else (
        torch.rand(20, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.arange(20) % 10)
    apgd = evaluate(run['model'], 'fashion-mnist-linf', data=(x, y), attacks=['apgd-ce'], n_examples=20, checks=False,
                    model_name=f'robust_zoo/{ARCH}').to_dict()
    folder = publish.write_card_repo(run['dir'], tag=TAG, evaluations=[run['dir'] / 'final_eval.json',
                                                                   run['dir'] / 'pgd20_n20.json', apgd],
                                 out_root=tmp_path / 'cards', index_path=tmp_path / 'published.json')
    summary = next(line for line in (folder / 'README.md').read_text().splitlines() if line.startswith('Under the `'))
    pct = records._pct
    lo, hi = apgd['confidence_interval']
    assert (f"Under the stronger apgd-ce, on the first 20 test images: robust accuracy {pct(apgd['robust_accuracy'])} "
            f"(Wilson 95% {pct(lo)} to {pct(hi)}), against pgd-20 {pct(run['records'][1]['attacks']['pgd-20'])} on "
            'the same images.') in summary
    assert summary.index('on the first 50 test images') < summary.index('Under the stronger')  # the headline first
    assert '- Only part of AutoAttack ran (apgd-ce), not the whole of AutoAttack standard' in \
           (folder / 'README.md').read_text()
    # what `list --results` and demo read
    entry = _pretrained.load_published(tmp_path / 'published.json')[f'{ARCH}.{TAG}']
    assert entry['n_examples'] == 50 and entry['stronger'] == [
        dict(attacks=['apgd-ce'], n_examples=20, robust_accuracy=apgd['robust_accuracy'])]
    assert _pretrained.stronger_text(entry) == f"; stronger: apgd-ce {apgd['robust_accuracy']:.3f} (n=20)"
    plain = publish.write_card_repo(run['dir'], tag=TAG, evaluations=[run['dir'] / 'final_eval.json'],
                                out_root=tmp_path / 'cards2', index_path=tmp_path / 'published2.json')
    text = (plain / 'README.md').read_text()
    assert 'Under the stronger' not in text and 'Only part of AutoAttack' not in text
    assert 'stronger' not in _pretrained.load_published(tmp_path / 'published2.json')[f'{ARCH}.{TAG}']
    assert '- No AutoAttack evaluation is in these records' in text


def test_a_cell_from_fewer_seeds_than_its_row_names_them():
    """APGD runs on seed 0 of a 3-seed activation: its cell says (seed 0), so it is not read as a mean over seeds."""
    zoo = fixed_row('relu', 0.74, 0.002, 3)
    zoo['robust']['apgd-ce+apgd-t, n=1000'] = lb.seed_stat([0.73], 1000, ['resnet20_relu_at.fmnist_s0'], [0])
    table = lb.leaderboard_markdown([zoo])
    relu = table.splitlines()[2]
    assert relu.endswith(f"| {tables.format_stat(zoo['robust']['apgd-ce+apgd-t, n=1000'])} (seed 0) |")
    assert '(seed' not in relu.split(' | ')[-2]  # the 3-seed PGD cell names no seeds
    assert 'fewer seeds than its row names its seeds' in table
    assert 'fewer seeds' not in lb.leaderboard_markdown([fixed_row('relu', 0.74, 0.002, 3)])


def test_stronger_attacks_come_after_pgd_in_the_table_whatever_their_number_of_images():
    """The cards list a row's protocols by n, so APGD on 1,000 images comes before PGD-20 on 10,000; the table
    still reads clean, PGD, then the attacks that check it."""
    zoo = fixed_row('relu', 0.74, 0.002, 3, n=10000)
    zoo['robust'] = {'apgd-ce+apgd-t, n=1000': lb.seed_stat([0.73], 1000, ['relu.s0'], [0]),
                     'pgd-20, n=10000': zoo['clean']}
    assert lb.leaderboard_markdown([zoo]).splitlines()[0] == \
        ('| architecture | activation | threat model | seeds | clean, n=10000 | pgd-20, n=10000 | '
         'apgd-ce+apgd-t, n=1000 |')
    # columns, bars, the (!) note and the verdicts share one order: PGD, AutoAttack's subsets, the whole AutoAttack
    assert tables.attack_order(['autoattack-standard', 'apgd-ce+apgd-t', 'pgd-20', 'apgd-ce+apgd-t']) == \
        ['pgd-20', 'apgd-ce+apgd-t', 'autoattack-standard']


def test_cards_state_their_training_precision_and_the_leaderboard_notes_a_mix(run, tmp_path):
    """train_at.py --amp falls back to fp32 where bf16 is emulated, so one table can mix precisions: each
    card records its run's precision and the leaderboard says which rows used which."""
    cards = tmp_path / 'model_cards'
    for act, amp in (('relu', True), ('silu', False)):
        src = tmp_path / f'run-{act}'
        shutil.copytree(run['dir'], src)
        args = yaml.safe_load((src / 'args.yaml').read_text())
        (src / 'args.yaml').write_text(yaml.safe_dump(dict(args, model=f'robust_zoo/mlp3_{act}_at', amp=amp),
                                                      sort_keys=False))
        for record in ('final_eval.json', 'pgd20_n20.json'):
            text = (src / record).read_text().replace(f'robust_zoo/{ARCH}', f'robust_zoo/mlp3_{act}_at')
            (src / record).write_text(text)
        publish.write_card_repo(src, tag='fmnist_s0', out_root=cards, index_path=tmp_path / 'published.json')
    rows = lb.leaderboard(cards)
    assert [r['precision'] for r in rows] == [{'mlp3_relu_at.fmnist_s0': 'bfloat16 autocast'},
                                             {'mlp3_silu_at.fmnist_s0': 'fp32'}]
    table = lb.leaderboard_markdown(rows)
    assert ('Training precision differs between models' in table and 'bfloat16 autocast: `mlp3_relu_at.fmnist_s0`'
            in table and 'fp32: `mlp3_silu_at.fmnist_s0`.' in table)
    assert 'precision differs' not in lb.leaderboard_markdown(rows[:1])
    # a precision most models share is not listed model by model
    third = dict(rows[1], precision={'mlp3_gelu_at.fmnist_s0': 'fp32'})
    table = lb.leaderboard_markdown([*rows, third])
    assert 'bfloat16 autocast: `mlp3_relu_at.fmnist_s0`; fp32: every other model (2).' in table
    assert 'mlp3_gelu_at' not in table.split('Training precision differs')[1]


def test_the_card_command_finds_the_recipe_in_the_checkout_it_runs_in(run, tmp_path, published, monkeypatch,
                                                                        capsys):
    """train_at.py records the recipe as an absolute path of the machine it ran on: `robust-zoo card` run in a
    checkout names that checkout's file of the same name (a run made in another clone), and an fp32 run (--amp fell
    back) still matches its recipe. The card writer itself names only the recipe it is given."""
    configs = ROOT / 'train' / 'configs'
    recipe = configs / 'fmnist_resnet20.yaml'
    src = tmp_path / 'run-elsewhere'
    shutil.copytree(run['dir'], src)
    run_args = yaml.safe_load((src / 'args.yaml').read_text())

    def recorded(config):
        (src / 'args.yaml').write_text(yaml.safe_dump(dict(run_args, config=str(config))))
    recorded('/elsewhere/clone/train/configs/fmnist_resnet20.yaml')
    assert recipes.run_recipe(src, configs) == recipe
    assert recipes.run_recipe(src) is None, 'without a recipes folder only the recorded file counts'
    recorded(recipe)
    assert recipes.run_recipe(src, configs) == recipe and recipes.run_recipe(src) == recipe
    recorded('/elsewhere/custom.yaml')
    assert recipes.run_recipe(src, configs) is None
    args = dict(yaml.safe_load(recipe.read_text()), model='robust_zoo/resnet20_relu_at')
    assert recipes.find_recipe(args, configs) == recipe
    assert recipes.find_recipe(dict(args, amp=False), configs) == recipe, 'precision is not part of the recipe'
    assert recipes.find_recipe(dict(args, epochs=args['epochs'] + 1), configs) is None

    recorded('/elsewhere/clone/train/configs/fmnist_resnet20.yaml')
    text = (publish.write_card_repo(src, tag='fmnist_s0', out_root=tmp_path / 'lib', index_path=tmp_path / 'p.json')
            / 'README.md').read_text()
    assert '| recipe |' not in text and 'Reproduce with `python train/train_at.py -c args.yaml`' in text
    published(tmp_path / 'published.json', tmp_path / 'model_cards')
    monkeypatch.chdir(ROOT)  # a checkout: its train/configs/
    assert main(['card', str(src), '--tag', 'fmnist_s0']) == 0
    text = (tmp_path / 'model_cards' / f'{ARCH}.fmnist_s0' / 'README.md').read_text()
    assert '  recipe: train/configs/fmnist_resnet20.yaml\n' in text
    assert '| recipe | `train/configs/fmnist_resnet20.yaml` (flags on top of it: `args.yaml`) |' in text
    monkeypatch.chdir(tmp_path)  # no checkout here: the card names no recipe
    assert main(['card', str(src), '--tag', 'fmnist_s1']) == 0
    assert '| recipe |' not in (tmp_path / 'model_cards' / f'{ARCH}.fmnist_s1' / 'README.md').read_text()
    assert main(['card', str(src), '--tag', 'fmnist_s2', '--recipe', 'nowhere.yaml']) == 2
    assert 'recipe nowhere.yaml does not exist' in capsys.readouterr().err
    assert not (tmp_path / 'model_cards' / f'{ARCH}.fmnist_s2').exists()
