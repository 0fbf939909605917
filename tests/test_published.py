"""Every published model card in model_cards/: its weights load by name and through local-dir:, its stated
clean accuracy reproduces, and card, config and pretrained cfg agree (issue 7). Empty until weights land."""
import json

import pytest
import timm
import torch
from huggingface_hub import ModelCard
from timm.models import get_pretrained_cfg

import robust_zoo
from robust_zoo.data import load_dataset
from robust_zoo.evaluation.result import wilson_interval
from robust_zoo._io import sha256_file
from robust_zoo.models._pretrained import cards_dir, load_published

PUBLISHED = sorted(load_published())


def test_every_card_folder_is_indexed_and_every_index_entry_has_its_folder():
    folders = sorted(p.parent.name for p in cards_dir().glob('*/model.safetensors')) if cards_dir().is_dir() else []
    assert folders == PUBLISHED


@pytest.mark.parametrize('name', PUBLISHED)
def test_card_config_and_cfg_agree_and_weights_match_their_hash(name):
    entry = load_published()[name]
    folder = cards_dir() / name
    assert sha256_file(folder / 'model.safetensors') == entry['sha256']
    config = json.loads((folder / 'config.json').read_text())
    card = ModelCard.load(folder / 'README.md').data.to_dict()
    cfg = get_pretrained_cfg(name)
    assert config['architecture'] == entry['architecture'] == card['robust_zoo']['architecture'] == cfg.architecture
    assert config['pretrained_cfg']['threat_model'] == entry['threat_model'] == card['robust_zoo']['threat_model'] \
        == cfg.threat_model
    assert cfg.hf_hub_id == entry['hf_hub_id'] == config['pretrained_cfg']['hf_hub_id']
    assert card['robust_zoo']['sha256'] == entry['sha256']
    rz = card['robust_zoo']  # the index carries the card's warnings (robust-zoo list --results shows them)
    caveats = entry.get('caveats', {})
    assert caveats.get('checks_not_passed') == rz.get('checks_not_passed')
    assert bool(caveats.get('stopped_early')) == bool(rz.get('stopped_early'))
    assert bool(caveats.get('catastrophic_overfitting')) == \
        bool((rz.get('catastrophic_overfitting') or {}).get('kept_weights_affected'))


@pytest.mark.parametrize('name', PUBLISHED)
def test_weights_load_by_name_and_local_dir_with_the_same_logits(name):
    by_name = timm.create_model(f'robust_zoo/{name}', pretrained=True).eval()
    local = timm.create_model(f'local-dir:{cards_dir() / name}', pretrained=True).eval()
    x = torch.rand(4, *by_name.pretrained_cfg['input_size'])
    torch.testing.assert_close(by_name(x), local(x), rtol=0, atol=0)


@pytest.mark.parametrize('name', PUBLISHED)
def test_stated_clean_accuracy_reproduces_on_500_test_images(name):
    entry = load_published()[name]
    model = timm.create_model(f'robust_zoo/{name}', pretrained=True).eval()
    dataset = robust_zoo.get_threat_model(entry['threat_model']).dataset
    x, y = load_dataset(dataset, 'test', n=500)
    with torch.no_grad():
        correct = sum(int((model(x[i:i + 250]).argmax(1) == y[i:i + 250]).sum()) for i in range(0, 500, 250))
    lo, hi = wilson_interval(correct, 500)
    assert lo <= entry['clean_accuracy'] <= hi, (name, correct / 500, entry['clean_accuracy'])


def test_results_page_tables_are_the_ones_the_cards_generate(tmp_path):
    from pathlib import Path

    from robust_zoo.publish.leaderboard import write_leaderboard
    page = Path(__file__).resolve().parents[1] / 'docs' / 'results.md'
    copy = tmp_path / 'docs' / 'results.md'
    copy.parent.mkdir()
    copy.write_text(page.read_text())
    write_leaderboard(copy, copy.parent / 'assets' / 'leaderboard.png')  # same relative image link
    assert copy.read_text() == page.read_text(), 'stale tables in docs/results.md: run robust-zoo leaderboard'


BANKS = [n for n in PUBLISHED if (cards_dir() / n / 'sparta_bank.safetensors').is_file()]
TRANSFERRED = [n for n in PUBLISHED if 'sparta_bank' in ModelCard.load(cards_dir() / n / 'README.md').data.to_dict()
               .get('robust_zoo', {})]


@pytest.mark.parametrize('name', BANKS)
def test_published_bank_loads_by_name_into_a_deeper_net(name):
    from robust_zoo.sparta_bank import SpartaBankError, bank_mapping, read_bank, sparta_units
    units, meta = read_bank(cards_dir() / name / 'sparta_bank.safetensors')
    assert meta['repo'] == name and meta['dataset'] == load_published()[name]['dataset']
    if not name.startswith('resnet'):  # LeNetSmall's units are layers, not ResNet stages: no depth to match
        with pytest.raises(SpartaBankError, match="use mapping='mean' instead"):
            timm.create_model('robust_zoo/resnet56_sparta_at', sparta_bank=name)
        model = timm.create_model('robust_zoo/resnet56_sparta_at', sparta_bank=name, sparta_bank_mapping='mean')
        mean = torch.stack([u['attn.weight'] for u in units.values()]).mean(0)
        assert all(torch.allclose(t.attn.weight, mean) for t in sparta_units(model).values())
        return
    model = timm.create_model('robust_zoo/resnet56_sparta_at', sparta_bank=name)
    targets = sparta_units(model)
    source = bank_mapping(list(units), list(targets), 'relative-depth')['stages.2.8.act2']
    assert source == f"stages.2.{len({u.split('.')[2] for u in units if u.startswith('stages.2.')}) - 1}.act2"
    last = targets['stages.2.8.act2']  # the deepest block takes the source's deepest
    assert torch.equal(last.attn.weight, units[source]['attn.weight']) and not last.beta.requires_grad


@pytest.mark.parametrize('name', TRANSFERRED)
def test_transferred_model_holds_its_published_source_bank(name):
    from robust_zoo.sparta_bank import bank_mapping, read_bank, sparta_units
    bank = ModelCard.load(cards_dir() / name / 'README.md').data.to_dict()['robust_zoo']['sparta_bank']
    assert bank['source'] in PUBLISHED and bank['frozen']
    units, _ = read_bank(cards_dir() / bank['source'] / 'sparta_bank.safetensors')
    model = timm.create_model(f'robust_zoo/{name}', pretrained=True)
    targets = sparta_units(model)
    for target, source in bank_mapping(list(units), list(targets), bank['mapping']).items():
        assert torch.equal(targets[target].beta, units[source]['beta']), target
        assert torch.equal(targets[target].attn.weight, units[source]['attn.weight']), target


def test_the_catastrophic_overfitting_threshold_has_a_margin_on_the_published_runs():
    """Every published single-step run either has an epoch flagged by the rule, and then says so on its card, or
    keeps its training-attack accuracy within 0.1 of validation PGD: no run sits near CO_GAP undecided."""
    import csv

    import yaml

    from robust_zoo.training import CO_GAP, SINGLE_STEP_ATTACKS, catastrophic_overfitting_epochs
    checked = 0
    for name in PUBLISHED:
        folder = cards_dir() / name
        args = yaml.safe_load((folder / 'args.yaml').read_text())
        if args.get('attack') not in SINGLE_STEP_ATTACKS or not (folder / 'summary.csv').is_file():
            continue
        rows = list(csv.DictReader((folder / 'summary.csv').open()))
        flagged = catastrophic_overfitting_epochs(rows, args['attack'], args.get('val_attack', 'pgd-10'))
        card = ModelCard.load(folder / 'README.md').data.to_dict()['robust_zoo']
        assert (card.get('catastrophic_overfitting') or {}).get('epochs', []) == flagged, name
        if not flagged:
            gaps = [float(r['train_adv_acc']) - float(r['eval_robust_acc']) for r in rows]
            assert max(gaps) < CO_GAP - 0.1, f'{name}: a gap of {max(gaps):.3f}, near the threshold {CO_GAP}'
        checked += 1
    assert checked or not PUBLISHED


def test_the_main_job_names_the_stronger_attacks_numbers_the_card_states():
    """The README's main job compares its fast run with the card: with the headline PGD number and, where the card
    has them, the APGD and AutoAttack numbers that the card says to trust."""
    from robust_zoo import demo
    from robust_zoo.models._pretrained import stronger_text
    name = demo.default_published_model()
    entry = load_published()[name]
    assert entry['stronger'], f'{name} has no APGD or AutoAttack record'
    lines = []
    demo.run_published(name, n_examples=10, attacks=('fgsm',), log=lines.append)
    assert f"on the first {entry['n_examples']} test images{stronger_text(entry)}); see it" in '\n'.join(lines)


@pytest.mark.parametrize('name', PUBLISHED)
def test_every_record_of_a_card_measured_its_weights(name):
    """A record that names its weights (weights_digest / weights_sha256) names the card's; an older one is tied to
    them by the index entry that published both."""
    from robust_zoo.evaluation.result import check_record_weights
    from robust_zoo.training import parameter_digest
    entry = load_published()[name]
    digest = parameter_digest(timm.create_model(f'robust_zoo/{name}', pretrained=True))
    for i, record in enumerate(json.loads((cards_dir() / name / 'eval_results.json').read_text()), 1):
        check_record_weights(record, f'{name}: record {i}', sha256=entry['sha256'], digest=digest,
                             fallback=entry['sha256'])


@pytest.mark.parametrize('name', BANKS)
def test_every_published_bank_is_the_one_its_card_published(name):
    from robust_zoo.sparta_bank import BANK_FILE, published_bank_sha256
    assert sha256_file(cards_dir() / name / BANK_FILE) == published_bank_sha256(cards_dir() / name)


@pytest.mark.parametrize('name', BANKS)
def test_a_card_with_a_bank_tells_how_to_load_it_with_todays_names(name):
    """The card's bank paragraph is the one the card writer writes now (module, mappings), not an older text."""
    from robust_zoo.publish.card_body import bank_paragraph
    lines = (cards_dir() / name / 'README.md').read_text().splitlines()
    assert bank_paragraph(load_published()[name]['architecture'], name) in lines


def test_a_leaderboard_row_never_mixes_two_recipes():
    """LeNetSmall ReLU was trained under the 100-epoch reproduction and under the 30-epoch grid, both with PGD:
    two rows, each named by its recipe, each with its own seeds."""
    from robust_zoo.publish.leaderboard import leaderboard
    from robust_zoo.publish.tables import architecture_cell, several_attacks
    rows = [r for r in leaderboard() if r['base_architecture'] == 'lenet_small' and r['activation'] == 'relu']
    assert sorted(r['recipe'] for r in rows) == ['train/configs/lenet_small_fmnist_croce2019.yaml',
                                                 'train/configs/lenet_small_fmnist_pgd10.yaml']
    assert all(len(r['repos']) == len(r['seeds']) == len(set(r['seeds'])) for r in rows)
    several = several_attacks(leaderboard())
    assert sorted(architecture_cell(r, several) for r in rows) == [
        'lenet_small (`lenet_small_fmnist_croce2019`)', 'lenet_small (`lenet_small_fmnist_pgd10`)']
    one = dict(base_architecture='x', threat_model='t', train_attack='pgd', recipe='a.yaml')
    assert architecture_cell(one, several_attacks([one, dict(one, recipe='b.yaml')])) == 'x (`a`)'
    assert architecture_cell(one, several_attacks([one, dict(one, train_attack='none')])) == 'x (pgd training)'
    assert architecture_cell(one, several_attacks([one])) == 'x'
