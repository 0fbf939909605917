"""The equal-time comparison on the Training page is what experiments/equal_time.py generates from the committed
evidence, and the N-FGSM arm gets the epochs that the measured throughput ratio buys."""
import importlib.util
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _equal_time():
    spec = importlib.util.spec_from_file_location('equal_time', ROOT / 'experiments' / 'equal_time.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_training_page_holds_the_table_the_evidence_generates(tmp_path):
    et = _equal_time()
    page = tmp_path / 'training.md'
    shutil.copyfile(ROOT / 'docs' / 'training.md', page)
    body = et.report(page)
    assert f'{et.START}\n{body}\n{et.END}' in (ROOT / 'docs' / 'training.md').read_text(), \
        'docs/training.md is stale: run python experiments/equal_time.py report'
    assert (tmp_path / 'assets' / 'equal_time.png').is_file()
    assert '| pgd10 | 30 |' in body and '| n-fgsm |' in body


def test_a_run_gives_each_arm_its_recipe_and_attack():
    et = _equal_time()
    cmd = et._train_cmd(Path('out'), 'n-fgsm', ['--epochs', '86'])
    assert cmd[cmd.index('-c') + 1].endswith('lenet_small_fmnist_pgd10.yaml')
    assert cmd[cmd.index('--attack') + 1] == 'n-fgsm' and cmd[-2:] == ['--epochs', '86']
