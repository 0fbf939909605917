"""The Fashion-MNIST -> digits transfer experiment (experiments/): its table and verdicts come from the runs' records
and cards, and follow the numbers; a card of a fine-tuned model names its backbone; a standard-trained baseline never
becomes an architecture's default weights."""
import json
import sys
from pathlib import Path

import pytest
import timm
import torch
import yaml
from huggingface_hub import ModelCard

import robust_zoo  # noqa: F401
from robust_zoo import publish
from robust_zoo.evaluation import evaluate, wilson_interval
from robust_zoo.models import _pretrained
from robust_zoo.training import save_weights

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from experiments import digits_finetune, finetune_table  # noqa: E402
from experiments.finetune_table import ARMS, THREATS  # noqa: E402
from _train_args import train_args as _train_args  # noqa: E402


def _record(threat, clean, pgd, apgd, n=500, sha='w0', seed=0):
    """An evaluation record as robust_zoo.evaluate writes it (PGD-20 and APGD-CE + APGD-T, the worst case)."""
    eps = {'digits-linf': 0.1, 'digits-linf-0.05': 0.05}[threat]
    robust = min(pgd, apgd)
    return dict(model='robust_zoo/lenet_wide_relu_at', threat_model=dict(id=threat, dataset='digits', norm='Linf',
                                                                         eps=eps),
                n_examples=n, clean_accuracy=clean, robust_accuracy=robust, attacks={'pgd-20': pgd,
                                                                                     'apgd-ce+apgd-t': apgd},
                confidence_interval=list(wilson_interval(round(robust * n), n)), checks=[], seed=seed,
                weights_sha256=sha)


def _runs(folder, robust, minutes=1.0, arms=tuple(ARMS)):
    """One record file per arm and seed; `robust`: {arm: worst-case robust accuracy at eps 0.1 per seed}."""
    folder.mkdir(parents=True, exist_ok=True)
    for arm in arms:
        for seed, r in enumerate(robust[arm]):
            run = dict(run=f'{arm}-s{seed}', arm=arm, seed=seed, tag=f'digits_{arm}_s{seed}',
                       backbone={'robust': 'lenet_wide_relu_at.flag', 'standard': 'lenet_wide_relu_at.std'}.get(
                           ARMS[arm].backbone), weights_sha256=f'{arm}{seed}', train_seconds=60 * minutes + seed,
                       process_cpu_seconds=120 * minutes,
                       records=[_record('digits-linf', 0.95, r + 0.01, r, sha=f'{arm}{seed}', seed=seed),
                                _record('digits-linf-0.05', 0.95, min(1, 2 * r), min(1, 2 * r), sha=f'{arm}{seed}',
                                        seed=seed)])
            (folder / f'{arm}-s{seed}.json').write_text(json.dumps(run))
    return folder


ROBUST = {  # worst-case robust accuracy at eps 0.1 per seed
    'lp_robust': (0.50, 0.52, 0.48), 'lp_standard': (0.00, 0.01, 0.00),
    'ft_robust': (0.10, 0.12, 0.08), 'ft_standard': (0.09, 0.13, 0.08),
    'aft_robust': (0.80, 0.81, 0.79), 'aft_standard': (0.60, 0.62, 0.58), 'at_scratch': (0.70, 0.71, 0.69),
}


def test_the_table_has_every_arm_and_the_verdicts_follow_the_numbers(tmp_path):
    runs = finetune_table.load_runs(_runs(tmp_path / 'results', ROBUST))
    text = finetune_table.finetune_markdown(runs, {'robust': 'lenet_wide_relu_at.flag',
                                                   'standard': 'lenet_wide_relu_at.std'})
    lines = {line.split(' | ')[0].strip('| `'): line for line in text.splitlines() if line.startswith('| `')}
    assert set(lines) == set(ARMS)
    # worst case at eps 0.1: mean ± sd over the three seeds, in %; the backbone each arm started from
    assert '**50.0 ± 2.0**' in lines['lp_robust'] and '`lenet_wide_relu_at.flag`' in lines['lp_robust']
    assert '| 3 | 95.0 ± 0.0 |' in lines['aft_robust'] and 'none (scratch)' in lines['at_scratch']
    assert lines['lp_robust'].endswith('| 1.0 ± 0.0 | 2.0 ± 0.0 |')  # training minutes (60 s + seed s), CPU minutes
    verdicts = [line for line in text.splitlines() if line.startswith('**')]
    assert len(verdicts) == len(finetune_table.CLAIMS) * len(THREATS)

    def verdict(claim, threat):
        (line,) = [v for v in verdicts if v.startswith(f'**{claim}**') and f'`{threat}`' in v]
        return line.split(': this scale ', 1)[1].split(' (', 1)[0]
    assert verdict('A robust backbone transfers robustness under a linear probe', 'digits-linf') == 'agrees'
    assert verdict('A robust backbone transfers robustness under full clean fine-tuning', 'digits-linf') == \
        'cannot tell'
    assert verdict('Adversarial fine-tuning of the standard backbone beats adversarial training from scratch at the '
                   'same cost', 'digits-linf') == 'disagrees'
    assert verdict('Adversarial fine-tuning of the robust backbone beats adversarial training from scratch at the '
                   'same cost', 'digits-linf-0.05') == 'cannot tell'  # both arms at 100% at eps 0.05 here


def test_an_arm_without_runs_cannot_tell_yet(tmp_path):
    arms = [a for a in ARMS if a != 'lp_standard']
    runs = finetune_table.load_runs(_runs(tmp_path / 'results', ROBUST, arms=arms))
    text = finetune_table.finetune_markdown(runs, {})
    assert '| `lp_standard` | `standard` | linear probe (backbone frozen, clean) | 0 | – |' in text
    (line,) = [v for v in text.splitlines() if v.startswith('**A robust backbone transfers robustness under a '
                                                               'linear probe**') and '`digits-linf`' in v]
    assert 'cannot tell yet' in line


def test_a_published_run_is_read_from_its_card_which_must_hold_the_same_weights(tmp_path):
    results = _runs(tmp_path / 'results', ROBUST)
    card = tmp_path / 'cards' / 'lenet_wide_relu_at.digits_lp_robust_s0'
    card.mkdir(parents=True)
    records = [_record('digits-linf', 0.9, 0.3, 0.3, sha='lp_robust0'), _record('digits-linf-0.05', 0.9, 0.6, 0.6,
                                                                               sha='lp_robust0')]
    (card / 'eval_results.json').write_text(json.dumps(records))
    runs = finetune_table.load_runs(results, tmp_path / 'cards')
    (published,) = [r for r in runs if r.get('card')]
    assert published['card'] == card.name and published['records'] == records
    text = finetune_table.finetune_markdown(runs, {})
    assert '**43.3 ± 11.7**' in text and f'`{card.name}`' in text  # (0.30 + 0.52 + 0.48) / 3, named as a source
    (card / 'eval_results.json').write_text(json.dumps([dict(r, weights_sha256='other') for r in records]))
    with pytest.raises(ValueError, match='other weights than the record'):
        finetune_table.load_runs(results, tmp_path / 'cards')


def test_the_page_block_is_replaced_and_nothing_else(tmp_path):
    page = tmp_path / 'finetuning.md'
    page.write_text(f'# Fine-tuning\nby hand\n{finetune_table.START}\nold\n{finetune_table.END}\nafter\n')
    digits_finetune.write_table(page, _runs(tmp_path / 'results', ROBUST), tmp_path / 'no-cards')
    text = page.read_text()
    assert text.startswith('# Fine-tuning\nby hand\n') and text.endswith(f'{finetune_table.END}\nafter\n')
    assert 'old' not in text and '| `aft_robust` |' in text
    assert finetune_table.finetune_markdown([], {}).startswith('_No run')


def test_the_committed_page_is_what_the_records_and_cards_give():
    page = ROOT / 'docs' / 'finetuning.md'
    text = page.read_text()
    block = text.split(finetune_table.START + '\n', 1)[1].split('\n' + finetune_table.END, 1)[0]
    runs = finetune_table.load_runs(digits_finetune.RESULTS, _pretrained.cards_dir())
    backbones = {ARMS[r['arm']].backbone: r['backbone'] for r in runs if r.get('backbone')}
    assert block == finetune_table.finetune_markdown(runs, backbones), \
        'docs/finetuning.md is stale: python -m experiments.digits_finetune table'




@pytest.fixture
def published():
    yield _pretrained.register_published
    _pretrained.register_published()


def _card(tmp_path, cards, index, *, tag, attack, seed=0, initial_checkpoint='', freeze='none',
          dataset='fashion-mnist'):
    """A card of a random mlp3 run (one evaluate() record on 20 random images) with these training flags."""
    run = tmp_path / f'run-{tag}'
    run.mkdir()
    torch.manual_seed(seed)
    model = timm.create_model('robust_zoo/mlp3_relu_at').eval()
    save_weights(model.state_dict(), run / 'model.safetensors', dict(arch='robust_zoo/mlp3_relu_at', epoch='0'))
    args = _train_args(['--model', 'robust_zoo/mlp3_relu_at', '--attack', attack, '--seed', str(seed), '--dataset',
                        dataset, '--freeze', freeze, '--reset-head', '--output', str(run)]
                       + (['--initial-checkpoint', str(initial_checkpoint)] if initial_checkpoint else []))
    (run / 'args.yaml').write_text(yaml.safe_dump(args, sort_keys=False))
    x, y = torch.rand(20, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.arange(20) % 10
    threat = {'fashion-mnist': 'fashion-mnist-linf', 'digits': 'digits-linf'}[dataset]
    record = evaluate(model, threat, data=(x, y), attacks=['pgd-20'], n_examples=20, checks=False,
                      model_name='robust_zoo/mlp3_relu_at').to_dict()
    return publish.write_card_repo(run, tag=tag, evaluations=[record], out_root=cards, index_path=index)


def test_a_standard_trained_baseline_is_never_the_default_weights(tmp_path, published):
    """Published beside an adversarially trained model of the same architecture, whatever the tags' order, the
    baseline is loaded by its tag only: `robust_zoo/<arch>` stays the robust model."""
    cards, index = tmp_path / 'model_cards', tmp_path / 'published.json'
    _card(tmp_path, cards, index, tag='a_standard_s0', attack='none')
    _card(tmp_path, cards, index, tag='z_robust_s0', attack='pgd')
    assert json.loads(index.read_text())['mlp3_relu_at.a_standard_s0']['train_attack'] == 'none'
    published(index, cards)
    assert timm.models.get_pretrained_cfg('mlp3_relu_at').tag == 'z_robust_s0'
    assert timm.models.get_pretrained_cfg('mlp3_relu_at.a_standard_s0').tag == 'a_standard_s0'


def test_a_fine_tuned_models_card_names_its_backbone(tmp_path, published):
    cards, index = tmp_path / 'model_cards', tmp_path / 'published.json'
    source = _card(tmp_path, cards, index, tag='fmnist_s0', attack='pgd')
    tuned = _card(tmp_path, cards, index, tag='digits_lp_s0', attack='none', dataset='digits', freeze='backbone',
                  initial_checkpoint=source / 'model.safetensors')
    meta = ModelCard.load(tuned / 'README.md').data.to_dict()['robust_zoo']
    sha = json.loads(index.read_text())['mlp3_relu_at.fmnist_s0']['sha256']
    assert meta['backbone'] == dict(source='mlp3_relu_at.fmnist_s0', published=True, sha256=sha, frozen=True,
                                    new_head=True)
    assert ('| backbone | fine-tuned from [`mlp3_relu_at.fmnist_s0`](../mlp3_relu_at.fmnist_s0) (sha256 '
            f'`{sha}`); backbone frozen: only the new head was trained (linear probe) |'
            ) in (tuned / 'README.md').read_text()
    text = (tuned / 'README.md').read_text()
    assert 'activations, fine-tuned from `mlp3_relu_at.fmnist_s0` on digits (no attack' in text
    assert 'backbone' not in ModelCard.load(source / 'README.md').data.to_dict()['robust_zoo']
    assert 'activations, adversarially trained on Fashion-MNIST (pgd' in (source / 'README.md').read_text()


QUICK = ['--train-samples', '64', '--epochs', '1', '--eval-samples', '10']


def _page_commands():
    """The train_at.py commands of docs/finetuning.md, as written there (one per arm)."""
    text = (ROOT / 'docs' / 'finetuning.md').read_text()
    return {line.split('--output runs/digits_finetune/', 1)[1].split()[0]: line.split()
            for block in text.split('```bash\n')[1:] for line in block.split('```', 1)[0].splitlines()
            if line.startswith('python train/train_at.py')}


def test_the_page_has_one_command_per_arm_with_its_recipe():
    commands = _page_commands()
    assert sorted(commands) == sorted(f'{arm}-s0' for arm in ARMS)
    for arm, spec in ARMS.items():
        cmd = commands[f'{arm}-s0']
        assert cmd[cmd.index('-c') + 1] == f'train/configs/{spec.recipe}'
        model = cmd[cmd.index('--model') + 1]
        assert (spec.backbone is None) == (model == 'robust_zoo/lenet_wide_relu_at'), arm
        if spec.backbone == 'standard':
            assert model == f'robust_zoo/{digits_finetune.STANDARD_BACKBONE}'


def test_a_page_command_runs_as_written_on_a_few_samples(tmp_path):
    """The linear probe of the published standard backbone, as the page writes it, on 64 digits: a run whose own
    evaluation is clean, PGD-20 and APGD-CE + APGD-T under digits-linf, with no sanity check warning."""
    import subprocess
    cmd = _page_commands()['lp_standard-s0']
    out = tmp_path / 'lp_standard-s0'
    cmd[cmd.index('--output') + 1] = str(out)
    subprocess.run([sys.executable, *cmd[1:], *QUICK], cwd=ROOT, check=True, capture_output=True, text=True)
    args = yaml.safe_load((out / 'args.yaml').read_text())
    assert (args['pretrained'], args['freeze'], args['reset_head'], args['attack']) == (True, 'backbone', True, 'none')
    record = json.loads((out / 'final_eval.json').read_text())['evaluation']
    assert record['threat_model']['id'] == 'digits-linf' and set(record['attacks']) == {'pgd-20', 'apgd-ce+apgd-t'}
    assert record['n_examples'] == 10 and all(c['status'] == 'PASS' for c in record['checks']), record['checks']
    # the frozen trunk is the published backbone's, the head is new
    from robust_zoo.training import load_weights
    tuned = load_weights(out / 'model.safetensors')
    source = load_weights(timm.models.get_pretrained_cfg(digits_finetune.STANDARD_BACKBONE).file)
    assert all(torch.equal(tuned[k], source[k]) for k in source if not k.startswith('head.'))
    assert not torch.equal(tuned['head.fc.weight'], source['head.fc.weight'])


def test_the_experiment_runs_one_arm_end_to_end_and_records_it(tmp_path):
    """`python -m experiments.digits_finetune run` on a few samples: trains, evaluates at both budgets, records the
    run, and the table reads it; a second call finds it done."""
    argv = ['run', '--root', str(tmp_path / 'runs'), '--results', str(tmp_path / 'results'), '--arm', 'at_scratch',
            '--seeds', '0', '--eval-samples', '10', '--', '--train-samples', '64', '--epochs', '1']
    assert digits_finetune.main(argv) == 0
    run = json.loads((tmp_path / 'results' / 'at_scratch-s0.json').read_text())
    assert (run['arm'], run['seed'], run['tag'], run['backbone']) == ('at_scratch', 0, 'digits_at_scratch_s0', None)
    assert [r['threat_model']['id'] for r in run['records']] == list(THREATS)
    assert all(r['n_examples'] == 10 and r['weights_sha256'] == run['weights_sha256'] for r in run['records'])
    assert run['train_seconds'] > 0 and run['process_cpu_seconds'] > 0 and run['train_samples'] == 64
    mtime = (tmp_path / 'results' / 'at_scratch-s0.json').stat().st_mtime_ns
    assert digits_finetune.main(argv) == 0
    assert (tmp_path / 'results' / 'at_scratch-s0.json').stat().st_mtime_ns == mtime
    text = finetune_table.finetune_markdown(finetune_table.load_runs(tmp_path / 'results'), {})
    assert '| `at_scratch` | none (scratch) |' in text and '| `lp_robust` |' in text


def test_the_pages_python_fine_tune_keeps_the_published_trunk_and_trains_a_fresh_head_only():
    text = (ROOT / 'docs' / 'finetuning.md').read_text()
    (snippet,) = [b.split('```', 1)[0] for b in text.split('```python\n')[1:]]
    scope = {}
    exec(snippet, scope)
    model = scope['model']
    from robust_zoo.training import load_weights
    published = load_weights(model.pretrained_cfg['file'])
    assert model.pretrained_cfg['file'] == timm.models.get_pretrained_cfg('lenet_wide_relu_at').file
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in published.items() if not k.startswith('head.'))
    assert not torch.equal(state['head.fc.weight'], published['head.fc.weight'])
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {'head.fc.weight', 'head.fc.bias'}


def test_a_run_held_by_another_process_is_left_to_it(tmp_path):
    """Several `run` processes (one per seed) share the runs: a run claimed by one is skipped by the others."""
    import subprocess
    hold = ('import sys, time; from pathlib import Path; from experiments.digits_finetune import claim\n'
            'with claim(Path(sys.argv[1]), "lp_robust-s0") as mine:\n'
            '    print(mine, flush=True); time.sleep(60)')
    holder = subprocess.Popen([sys.executable, '-c', hold, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'True'
        with digits_finetune.claim(tmp_path, 'lp_robust-s0') as mine:
            assert not mine
        with digits_finetune.claim(tmp_path, 'lp_robust-s1') as mine:
            assert mine
    finally:
        holder.kill()
        holder.wait()
    with digits_finetune.claim(tmp_path, 'lp_robust-s0') as mine:  # the kernel freed the dead holder's lock
        assert mine


def test_a_record_under_another_threat_model_is_named_by_its_budget_never_as_a_stronger_attack():
    """A digits fine-tune is evaluated at eps 0.1 and 0.05 with the same attacks: the card's summary names the
    second budget, and neither the summary nor the index calls it a stronger attack on the first."""
    from robust_zoo.publish.card_body import _other_threat_models_text, _stronger_attacks_text
    from robust_zoo.publish.records import _stronger_index_entries

    def record(tid, eps, robust):
        return dict(threat_model=dict(id=tid, norm='Linf', eps=eps), n_examples=500, clean_accuracy=0.98,
                    robust_accuracy=robust, attacks={'pgd-20': robust + 0.02, 'apgd-ce+apgd-t': robust},
                    confidence_interval=[robust - 0.04, robust + 0.04])
    first, half = record('digits-linf', 0.1, 0.75), record('digits-linf-0.05', 0.05, 0.94)
    assert _stronger_attacks_text([first, half], first) == ''
    assert _stronger_index_entries([first, half], first) == []
    assert _other_threat_models_text([first, half], first) == (
        ' Under `digits-linf-0.05` (Linf, eps 0.05), on the first 500 test images: robust accuracy 94.0% (worst case '
        'per image over pgd-20, apgd-ce+apgd-t; Wilson 95% 90.0% to 98.0%), clean accuracy 98.0%.')
    stronger = dict(record('digits-linf', 0.1, 0.70), n_examples=100)
    assert 'Under the stronger apgd-ce+apgd-t, on the first 100 test images' in _stronger_attacks_text(
        [first, stronger, half], first)
