"""The study in experiments/: the rule that decides a comparison of arms over seeds (`compare_arms`), the claims'
verdicts, the Sparta transfer table, and the claims page they generate from the cards. None of it is in the
robust_zoo package or its wheel."""
import ast
import shutil
from pathlib import Path

import pytest
import setuptools

from experiments import claims, sparta_transfer, study
from experiments.claims import compare_arms
from robust_zoo.publish.leaderboard import seed_stat
from _rows import fixed_row

ROOT = Path(__file__).resolve().parents[1]
CLAIM = 'the claimed arm beats the base'


def _row(act, values, n=1000, arch='resnet20', bank=None, **extra):
    """A leaderboard row whose robust (and clean) stat over seeds comes from `values`, one per seed."""
    seeds = list(range(len(values)))
    stat = seed_stat(values, n, [f'{arch}_{act}_at.s{s}' for s in seeds], seeds)
    return dict(dict(base_architecture=arch, activation=act, bank=bank, threat_model='fashion-mnist-linf',
                     train_attack=None, seeds=seeds, repos=stat['repos'], clean=stat,
                     robust={f'pgd-20, n={n}': stat}), **extra)


# --- the rule: compare_arms -------------------------------------------------------------------------------------

def test_compare_arms_agrees_disagrees_or_cannot_tell_by_two_standard_errors():
    base = _row('relu', [0.70, 0.71, 0.72])  # 71.0, sd 1 point; on 1,000 images the binomial error is larger
    verdicts = {}
    for name, values in (('better', [0.78, 0.79, 0.80]), ('worse', [0.60, 0.61, 0.62]),
                         ('close', [0.71, 0.72, 0.73]), ('spread', [0.60, 0.95, 0.82])):
        found = compare_arms({'relu': base, name: _row(name, values)}, 'relu', CLAIM, 'resnet20 on `fashion-mnist`')
        assert found.protocol == 'pgd-20, n=1000'
        verdicts[name] = found
    assert [verdicts[k].verdict for k in ('better', 'worse', 'close', 'spread')] == \
        ['agrees', 'disagrees', 'cannot tell', 'cannot tell']
    # +8 points; error: sqrt(0.79 * 0.21 / 1000 + 0.71 * 0.29 / 1000) = 1.9 points (binomial above the seed spread)
    assert verdicts['better'].sentence == (
        f'**{CLAIM}** -- resnet20 on `fashion-mnist`: this scale agrees (pgd-20, n=1000; robust accuracy vs relu: '
        'better +8.0 ± 1.9 points; seeds relu: 3, better: 3; 2 standard errors decide).')
    assert 'worse -10.0 ± 2.1 points' in verdicts['worse'].sentence
    # the same +8 points with a seed spread of 17.7 points: the spread, not the test sample, sets the error
    assert 'spread +8.0 ± 10.3 points' in verdicts['spread'].sentence
    table = verdicts['better'].markdown.splitlines()
    assert table[0] == '| arm | seeds | clean | robust (pgd-20, n=1000) | vs relu |'
    assert table[2].startswith('| relu | 3 | 71.0 ± 1.0 [') and table[2].endswith(' | base |')
    assert table[3].endswith(' | +8.0 ± 1.9 points (better) |')
    assert verdicts['close'].markdown.splitlines()[3].endswith('(cannot tell) |')
    assert verdicts['worse'].markdown.splitlines()[3].endswith('(worse) |')


def test_compare_arms_gives_a_partial_verdict_when_the_arms_differ():
    base = _row('relu', [0.70, 0.71, 0.72])
    better, same, worse = (_row(a, v) for a, v in (('b', [0.78, 0.79, 0.80]), ('s', [0.70, 0.71, 0.72]),
                                                   ('w', [0.60, 0.61, 0.62])))
    assert compare_arms({'relu': base, 'b': better, 's': same}, 'relu', CLAIM).verdict == \
        'agrees in part, cannot tell for the rest'
    assert compare_arms({'relu': base, 'w': worse, 's': same}, 'relu', CLAIM).verdict == 'disagrees in part'
    assert compare_arms({'relu': base, 'b': better, 'w': worse}, 'relu', CLAIM).verdict == 'is mixed'
    assert claims.verdict_of([1, 1]) == 'agrees' and claims.verdict_of([-1, -1]) == 'disagrees'
    assert claims.verdict_of([0, 0]) == 'cannot tell'


def test_compare_arms_cannot_tell_yet_without_every_arm_or_a_shared_protocol():
    base = _row('relu', [0.70, 0.71, 0.72])
    found = compare_arms({'relu': base, 'fine-tuned': None}, 'relu', CLAIM, 'lenet on digits')
    assert (found.protocol, found.verdict) == (None, 'cannot tell yet')
    assert found.sentence == f'**{CLAIM}** -- lenet on digits: cannot tell yet (no fine-tuned model published).'
    assert '| fine-tuned | 0 | – | – | |' in found.markdown
    other = _row('silu', [0.8], n=500)  # PGD-20 on 500 images only
    found = compare_arms({'relu': base, 'silu': other}, 'relu', CLAIM)
    assert found.verdict == 'cannot tell yet' and found.sentence.endswith('(the arms share no robust protocol).')
    found = compare_arms({'relu': base, 'silu': _row('silu', [0.8])}, 'relu', CLAIM, protocol='apgd-ce, n=1000')
    assert found.sentence.endswith('(not every arm ran apgd-ce, n=1000).')
    with pytest.raises(ValueError, match="the base arm 'relu' is not among the arms"):
        compare_arms({'silu': other}, 'relu', CLAIM)


def test_one_seed_verdicts_say_they_are_provisional():
    def row(act, robust):
        stat = seed_stat([robust], 10000)
        return dict(base_architecture='resnet20', activation=act, bank=None, threat_model='fashion-mnist-linf',
                    seeds=[0], clean=stat, robust={'pgd-20, n=10000': stat})
    (verdict,) = claims.claim_verdicts([row('relu', 0.66), row('sparta', 0.75)])
    assert 'this scale agrees' in verdict and 'seeds relu: 1, sparta: 1' in verdict
    assert 'not the seed-to-seed spread, so this is provisional' in verdict


def test_find_row_picks_one_leaderboard_row_by_its_fields():
    rows = [_row('relu', [0.7]), _row('sparta', [0.7]), _row('sparta', [0.7], bank='resnet20_sparta_at on fmnist')]
    assert claims.find_row(rows, activation='relu') is rows[0]
    assert claims.find_row(rows, activation='sparta', bank=None) is rows[1]
    assert claims.find_row(rows, activation='gelu') is None
    with pytest.raises(ValueError, match='2 leaderboard rows have .*name more fields'):
        claims.find_row(rows, activation='sparta')


# --- the claims ---------------------------------------------------------------------------------------------------

def test_claim_verdicts_agree_disagree_or_cannot_tell():
    rows = [fixed_row('relu', 0.70, 0.01, 3), fixed_row('silu', 0.75, 0.01, 3), fixed_row('gelu', 0.76),
            fixed_row('pssilu', 0.705, 0.02, 3), fixed_row('sparta', 0.60, 0.01, 3),
            fixed_row('relu_smoothgrad', 0.72, 0.05, 3)]
    verdicts = {v.split('**')[1]: v for v in claims.claim_verdicts(rows)}
    assert 'this scale agrees' in verdicts['SAT (Xie et al.): smooth activations beat ReLU']
    assert 'silu +5.0' in verdicts['SAT (Xie et al.): smooth activations beat ReLU']
    assert 'cannot tell' in verdicts['PSSiLU beats ReLU (Dai et al.)']
    assert 'this scale disagrees' in verdicts['Sparta beats ReLU (Guo et al.)']
    assert 'cannot tell' in verdicts["SAT sec. 3: ReLU's smooth backward alone helps"]  # +2 points, seed sd 5
    assert 'capped ReLU adds robustness (Sooksatra et al.)' not in verdicts  # no capped_relu card: no sentence
    assert claims.claim_verdicts([fixed_row('silu', 0.8)]) == []  # no ReLU baseline, nothing to say


def test_verdicts_are_also_given_without_runs_that_overfit_catastrophically():
    co = dict(epoch=1, train_adv_acc=0.81, val_robust_acc=0.37, gap_threshold=0.2)
    relu = _row('relu', [0.70, 0.75, 0.20], n=20, arch='mlp3', overfit={'mlp3_relu_at.s2': co},
                robust_without_overfit={'pgd-20, n=20': seed_stat([0.70, 0.75], 20)})
    silu = _row('silu', [0.65, 0.70], n=20, arch='mlp3')
    (verdict,) = [v for v in claims.claim_verdicts([relu, silu]) if v.startswith('**SAT (Xie et al.): smooth')]
    assert 'seeds relu: 3, silu: 2' in verdict and 'read with the notes on relu (co) beneath the leaderboard' in verdict
    assert verdict.endswith(' Without the runs that overfit catastrophically (`mlp3_relu_at.s2`): this scale '
                            'cannot tell (silu -5.0 ± 14.5 points; seeds relu: 2, silu: 2).')
    alone = dict(silu, overfit={'x': co}, robust_without_overfit={})  # every run of the claimed activation overfit
    (verdict,) = [v for v in claims.claim_verdicts([relu, alone]) if v.startswith('**SAT')]
    assert verdict.endswith('no silu run remains: every one overfit.')


def test_an_architecture_trained_with_two_attacks_gets_a_verdict_per_attack():
    rows = [_row(act, [robust], n=20, arch='mlp3', train_attack=attack)
            for attack in ('n-fgsm', 'pgd') for act, robust in (('capped_relu', 0.40), ('relu', 0.65))]
    verdicts = [v for v in claims.claim_verdicts(rows) if v.startswith('**capped ReLU')]
    assert [v.split(' on `')[0].split('-- ')[1] for v in verdicts] == ['mlp3 (n-fgsm training)', 'mlp3 (pgd training)']
    assert all('capped_relu -25.0' in v for v in verdicts)


def test_a_verdict_names_the_leaderboard_notes_its_arms_are_read_with():
    relu = _row('relu', [0.70], stopped_early={'resnet20_relu_at.s0': (0, 3)}, checks={'x': ['black box WARN']})
    (verdict,) = [v for v in claims.claim_verdicts([relu, _row('silu', [0.70])]) if v.startswith('**SAT')]
    assert verdict.endswith('; read with the notes on relu (e), relu (!) beneath the leaderboard).')


def test_verdicts_repeat_the_comparison_under_a_stronger_attack():
    """The verdict stays with PGD-20 (most seeds and images); where ReLU and a claimed activation also ran APGD
    or AutoAttack, a sentence says what that stronger attack finds, with its seeds and n."""
    def row(act, pgd, apgd=None, aa=None):
        r = fixed_row(act, pgd, 0.002, 3, n=10000)
        r['robust'] = {'pgd-20, n=10000': r['clean']}
        if aa is not None:  # before APGD, as a card lists its records by n, most first
            r['robust']['autoattack-standard, n=500'] = seed_stat([aa], 500, [f'{act}.s0'], [0])
        if apgd is not None:
            r['robust']['apgd-ce+apgd-t, n=1000'] = seed_stat([apgd], 1000, [f'{act}.s0'], [0])
        return r
    rows = [row('relu', 0.74, apgd=0.72, aa=0.70), row('pssilu', 0.74, apgd=0.62, aa=0.69), row('silu', 0.73),
            row('sparta', 0.735, apgd=0.71)]
    verdicts = {v.split('**')[1]: v for v in claims.claim_verdicts(rows)}
    pssilu = verdicts['PSSiLU beats ReLU (Dai et al.)']
    assert 'cannot tell (pgd-20, n=10000' in pssilu
    assert ('Under the stronger apgd-ce+apgd-t (n=1000; relu: seed 0, pssilu: seed 0; test-sample error only): '
            'this scale disagrees (pssilu -10.0 ± ' in pssilu)
    assert 'Under the stronger autoattack-standard (n=500; relu: seed 0, pssilu: seed 0; test-sample error only): ' \
           'this scale cannot tell (pssilu -1.0 ± ' in pssilu
    assert pssilu.index('stronger apgd-ce+apgd-t') < pssilu.index('stronger autoattack-standard'), \
        "AutoAttack's subset first, then the whole, as in the table's columns"
    assert 'Under the stronger apgd-ce+apgd-t' in verdicts['Sparta beats ReLU (Guo et al.)']
    assert 'autoattack' not in verdicts['Sparta beats ReLU (Guo et al.)']  # sparta did not run it
    assert 'Under the stronger' not in verdicts['SAT (Xie et al.): smooth activations beat ReLU']  # silu ran neither
    assert 'Under the stronger' not in ''.join(claims.claim_verdicts([row('relu', 0.74),
                                                                      row('pssilu', 0.74, apgd=0.7)]))



def test_apgd_on_every_seed_decides_over_pgd_on_more_images_but_not_over_pgd_on_more_seeds():
    """The long-budget grid runs PGD-20 on 10,000 and APGD-CE + APGD-T on 1,000 for every seed: the stronger attack
    decides. The 4-epoch zoo ran APGD on seed 0 only: PGD-20 over every seed decides there."""
    def row(act, pgd, apgd):
        return dict(_row(act, pgd, n=10000), robust={'pgd-20, n=10000': seed_stat(pgd, 10000),
                                                      'apgd-ce+apgd-t, n=1000': seed_stat(apgd, 1000)})
    every_seed = [row('relu', [0.75, 0.75, 0.76], [0.74, 0.74, 0.75]), row('silu', [0.76] * 3, [0.68] * 3)]
    assert claims.deciding_protocol(every_seed) == 'apgd-ce+apgd-t, n=1000'
    assert 'this scale disagrees (apgd-ce+apgd-t, n=1000;' in claims.claim_verdicts(every_seed)[0]
    seed_0 = [row('relu', [0.75, 0.75, 0.76], [0.74]), row('silu', [0.76] * 3, [0.72])]
    assert claims.deciding_protocol(seed_0) == 'pgd-20, n=10000'
    thin = [row('relu', [0.75, 0.75, 0.76], [0.74]), row('silu', [0.76], [0.72])]  # thinnest row ties: all seeds
    assert claims.deciding_protocol(thin) == 'pgd-20, n=10000'

# --- the Sparta transfer experiments ------------------------------------------------------------------------------

BANK = 'resnet20_sparta_at on fashion-mnist'


def test_transfer_table_and_verdicts_compare_the_frozen_bank_with_relu_and_sparta_from_scratch():
    rows = [_row('relu', [0.20, 0.22, 0.18], n=20, arch='resnet32'),
            _row('sparta', [0.50, 0.48, 0.52], n=20, arch='resnet32'),
            _row('sparta', [0.90, 0.92, 0.91], n=20, arch='resnet32', bank=BANK)]
    claim = [v for v in claims.claim_verdicts(rows) if v.startswith('**Sparta beats ReLU')]
    assert len(claim) == 1 and 'sparta +30.0 ± ' in claim[0], 'the claims compare ReLU with Sparta from scratch only'
    (experiment,) = sparta_transfer.transfer_experiments(rows)
    assert (experiment['across'], experiment['target'], experiment['protocol']) == ('CNNs', 'resnet32', 'pgd-20, n=20')
    table = sparta_transfer.transfer_markdown([experiment])
    assert f'| CNNs | resnet32 | `fashion-mnist-linf` | Sparta, frozen bank from {BANK} | 3 |' in table
    assert '| CNNs | resnet32 | `fashion-mnist-linf` | ReLU | 3 | 20.0 ± 2.0 ' in table
    assert 'by `python -m experiments.study`' in table
    beats_relu, vs_scratch = sparta_transfer.transfer_verdicts([experiment])
    assert 'beats ReLU' in beats_relu and 'this scale agrees' in beats_relu and '+71.0 ± ' in beats_relu
    assert 'from scratch' in vs_scratch and 'the transferred bank is better' in vs_scratch
    assert 'provisional' not in beats_relu + vs_scratch  # three seeds per arm


def test_transfer_verdicts_are_also_given_without_runs_that_overfit():
    def row(act, values, bank=None, overfit=None):
        stat = seed_stat(values, 1000)
        healthy = [v for i, v in enumerate(values) if i not in (overfit or {})]
        return dict(base_architecture='resnet32', activation=act, bank=bank, threat_model='fashion-mnist-linf',
                    seeds=list(range(len(values))), clean=stat, robust={'pgd-20, n=1000': stat},
                    overfit={f'resnet32_{act}_at.s{i}': dict(epoch=1, train_adv_acc=0.81, val_robust_acc=0.37,
                                                             gap_threshold=0.2) for i in (overfit or {})},
                    robust_without_overfit={'pgd-20, n=1000': seed_stat(healthy, 1000)} if overfit else None)
    rows = [row('relu', [0.72, 0.19, 0.71], overfit={1}), row('sparta', [0.71, 0.70, 0.71]),
            row('sparta', [0.70, 0.71, 0.70], bank=BANK)]
    (experiment,) = sparta_transfer.transfer_experiments(rows)
    relu_verdict, scratch_verdict = sparta_transfer.transfer_verdicts([experiment])
    assert 'this scale cannot tell' in relu_verdict and 'seeds 3 vs 3' in relu_verdict
    assert relu_verdict.endswith('Without the runs that overfit catastrophically (`resnet32_relu_at.s1`): this scale '
                                 'cannot tell (robust accuracy vs ReLU: -1.2 ± 2.0 points; seeds 3 vs 2).')
    assert 'Without the runs' not in scratch_verdict
    table = sparta_transfer.transfer_markdown([experiment])
    assert '| CNNs | resnet32 | `fashion-mnist-linf` | ReLU (co) | 3 |' in table
    assert ('(co) Catastrophic overfitting (Wong et al. 2020) in the shipped weights of `resnet32_relu_at.s1`' in table
            and table.split('(co) Catastrophic')[1].split('\n')[0].endswith(
                'stay in the rows (every seed counts); the verdicts are also given without them.'))
    assert 'precision differs' not in table
    assert sparta_transfer.transfer_summary([experiment]) == (
        '**In short: a frozen transferred Sparta bank beats ReLU in 0 of the 1 transfer experiments at this scale** '
        '(resnet32 on `fashion-mnist-linf`: cannot tell; every seed, 2 standard errors decide; each experiment\'s '
        'sentence below gives the numbers, and the comparison without runs that overfit catastrophically where there '
        'are any).')
    rows[0]['robust']['pgd-20, n=1000'] = seed_stat([0.60, 0.61, 0.60], 1000)  # ReLU clearly worse: the bank wins
    assert 'beats ReLU in 1 of the 1' in sparta_transfer.transfer_summary(sparta_transfer.transfer_experiments(rows))
    assert sparta_transfer.transfer_summary([]) == ''
    rows[0]['precision'] = {'resnet32_relu_at.s0': 'fp32', 'resnet32_relu_at.s1': 'fp32',
                            'resnet32_relu_at.s2': 'bfloat16 autocast'}
    rows[1]['precision'] = {'resnet32_sparta_at.s0': 'fp32'}
    table = sparta_transfer.transfer_markdown(sparta_transfer.transfer_experiments(rows))  # one arm, two precisions
    assert ('Training precision differs between models (the machine decided: `train_at.py --amp` trains in fp32 '
            'where bf16 is emulated; the budget is otherwise identical): bfloat16 autocast: `resnet32_relu_at.s2`; '
            'fp32: every other model (3).') in table


def test_transfer_across_datasets_and_missing_arms():
    def row(act, threat, robust, bank=None):
        stat = seed_stat([robust], 500)
        return dict(base_architecture='resnet20', activation=act, bank=bank, threat_model=threat, seeds=[0],
                    clean=stat, robust={'pgd-20, n=500': stat})
    rows = [row('sparta', 'digits-linf', 0.7, bank=BANK), row('sparta', 'fashion-mnist-linf', 0.6)]
    (experiment,) = sparta_transfer.transfer_experiments(rows)
    assert experiment['across'] == 'datasets' and experiment['relu'] is None and experiment['scratch'] is None
    assert '| datasets | resnet20 | `digits-linf` | ReLU | 0 | – | – | |' in \
        sparta_transfer.transfer_markdown([experiment])
    assert all('cannot tell yet (no ' in v for v in sparta_transfer.transfer_verdicts([experiment]))
    assert sparta_transfer.transfer_markdown([]) == '_No transferred Sparta models published yet._'


# --- the page -----------------------------------------------------------------------------------------------------

def test_the_claims_page_is_what_the_cards_give(tmp_path):
    page = ROOT / 'docs' / 'claims.md'
    copy = tmp_path / 'claims.md'
    copy.write_text(page.read_text())
    study.write_study(copy)
    assert copy.read_text() == page.read_text(), 'stale blocks in docs/claims.md: run python -m experiments.study'


def test_the_study_rewrites_only_its_blocks(tmp_path):
    cards = tmp_path / 'cards'
    for name in ('resnet20_relu_at.fmnist_s0', 'resnet20_sparta_at.fmnist_s0'):
        shutil.copytree(ROOT / 'model_cards' / name, cards / name)
    page = tmp_path / 'claims.md'
    page.write_text(f'# Claims\nprose\n{study.CLAIMS_START}\nold\n{study.CLAIMS_END}\nmore prose\n'
                    f'{study.CONVERGENCE_START}\nold\n{study.CONVERGENCE_END}\n'
                    f'{study.TRANSFER_START}\nold\n{study.TRANSFER_END}\nend\n')
    assert study.main(['--cards', str(cards), '--page', str(page)]) == 0
    text = page.read_text()
    assert text.startswith(f'# Claims\nprose\n{study.CLAIMS_START}\n**Sparta beats ReLU (Guo et al.)** -- resnet20 on '
                           '`fashion-mnist-linf`: this scale ')
    assert 'seeds relu: 1, sparta: 1' in text and 'old' not in text and text.endswith(f'{study.TRANSFER_END}\nend\n')
    assert f'{study.TRANSFER_START}\n_No transferred Sparta models published yet._\n{study.TRANSFER_END}' in text


def test_the_study_refuses_a_page_without_its_markers_and_writes_nothing(tmp_path, capsys):
    page = tmp_path / 'claims.md'
    page.write_text(f'# Claims\n{study.CLAIMS_START}\n{study.CLAIMS_END}\n')  # no convergence, no transfer block
    assert study.main(['--cards', str(tmp_path), '--page', str(page)]) == 2
    assert 'needs one <!-- convergence:start --> line' in capsys.readouterr().err
    assert page.read_text() == f'# Claims\n{study.CLAIMS_START}\n{study.CLAIMS_END}\n'
    assert study.main(['--page', str(tmp_path / 'nowhere.md')]) == 2
    assert 'nowhere.md does not exist' in capsys.readouterr().err


def test_the_study_is_neither_in_the_wheel_nor_imported_by_the_package():
    tomllib = pytest.importorskip('tomllib')  # Python 3.11+
    find = tomllib.loads((ROOT / 'pyproject.toml').read_text())['tool']['setuptools']['packages']['find']
    packages = setuptools.find_packages(str(ROOT), include=find['include'])
    assert 'robust_zoo.publish' in packages and not [p for p in packages if p.split('.')[0] != 'robust_zoo']
    for path in (ROOT / 'robust_zoo').rglob('*.py'):
        for node in ast.walk(ast.parse(path.read_text())):  # function bodies too
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ''] if isinstance(node, ast.ImportFrom) and not node.level else []
            assert not [n for n in names if n.split('.')[0] == 'experiments'], f'{path} imports the study'
