"""robust_zoo installed from its wheel reads nothing of the source checkout: the wheel holds the package and its
index of published weights only, `pretrained=True` loads from the cards folder that ROBUST_ZOO_MODEL_CARDS names,
and without it (offline, empty caches) the one error says what to do.

The wheel is built from a copy of the checkout's files and installed into a fresh venv outside it. torch, timm
and the other dependencies are the running interpreter's, seen through a `.pth` line naming its site-packages
(a `.pth` line only adds a folder to sys.path: the editable install's own `.pth` finder in that folder is not
run), and every subprocess runs isolated (`python -I`: no PYTHONPATH, no current folder) outside the checkout.
"""
import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INDEX = json.loads((ROOT / 'robust_zoo' / 'published.json').read_text())
CARDS = ROOT / 'model_cards'
# the smallest published model whose card folder is in the checkout: its weights are what the wheel must load
NAME = min((n for n in INDEX if (CARDS / n / 'model.safetensors').is_file()), key=lambda n: INDEX[n]['size'],
           default=None)

pytestmark = [pytest.mark.skipif(shutil.which('git') is None or not (ROOT / '.git').exists(),
                                 reason='builds the wheel from a git checkout'),
              pytest.mark.skipif(NAME is None, reason='needs a published card folder in model_cards/')]


def _checkout_files():
    """The files a fresh clone with this checkout's changes has (tracked and new, not ignored)."""
    listed = subprocess.run(['git', 'ls-files', '--cached', '--others', '--exclude-standard', '-z'], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split('\0')
    return [f for f in listed if f and (ROOT / f).is_file()]


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """(venv python, its site-packages, the wheel): robust_zoo's wheel installed into a fresh venv."""
    tmp = tmp_path_factory.mktemp('wheel')
    src = tmp / 'src'
    for rel in _checkout_files():  # every card folder but one: model_cards/ is there to be left out
        if rel.startswith('model_cards/') and not rel.startswith(f'model_cards/{NAME}/'):
            continue
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    pip = [sys.executable, '-m', 'pip', '--disable-pip-version-check', '--no-input']
    subprocess.run(pip + ['wheel', '--no-deps', '--no-build-isolation', '--no-index', '-q', '-w', str(tmp / 'dist'),
                          str(src)], check=True, capture_output=True, timeout=300)
    wheel, = (tmp / 'dist').glob('robust_zoo-*.whl')

    env_dir = tmp / 'venv'
    venv.create(env_dir, with_pip=False)
    python = env_dir / 'bin' / 'python'
    subprocess.run(pip + ['--python', str(python), 'install', '--no-deps', '--no-index', '-q', str(wheel)],
                   check=True, capture_output=True, timeout=300)
    site_packages = Path(subprocess.run([str(python), '-I', '-c', 'import sysconfig; print(sysconfig.get_paths()'
                                         '["purelib"])'], capture_output=True, text=True, check=True).stdout.strip())
    # the dependencies: this interpreter's site-packages, as plain sys.path entries
    deps = dict.fromkeys([sysconfig.get_paths()['purelib'], sysconfig.get_paths()['platlib'], *site.getsitepackages()])
    (site_packages / '_robust_zoo_test_deps.pth').write_text(''.join(f'{d}\n' for d in deps if Path(d).is_dir()))
    return python, site_packages, wheel


def _run(python, code, tmp_path, **env):
    """`code` run by the venv's python, isolated, in a folder outside the checkout, with caches in tmp_path and
    no robust_zoo or Hugging Face setting from this process."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(('ROBUST_ZOO_', 'HF_', 'HUGGINGFACE_', 'PYTHON', 'XDG_CACHE'))}
    clean.update(HF_HUB_OFFLINE='1', HF_HOME=str(tmp_path / 'hf'), ROBUST_ZOO_CACHE=str(tmp_path / 'rz-cache'),
                 XDG_CACHE_HOME=str(tmp_path / 'xdg'), OMP_NUM_THREADS='1', **env)
    cwd = tmp_path / 'elsewhere'
    cwd.mkdir(exist_ok=True)
    return subprocess.run([str(python), '-I', '-c', code], cwd=cwd, env=clean, capture_output=True, text=True,
                          timeout=300)


LOAD = f'''
import json, sys
import timm, torch
from safetensors.torch import load_file
import robust_zoo
from robust_zoo import settings
from robust_zoo.models import _pretrained
try:
    model = timm.create_model("robust_zoo/{NAME}", pretrained=True)
except Exception as e:
    print(json.dumps(dict(error=type(e).__name__, message=str(e))))
    sys.exit(0)
card = load_file(str(settings.cards_dir() / "{NAME}" / "model.safetensors"))
state = model.state_dict()
print(json.dumps(dict(
    robust_zoo=robust_zoo.__file__, sys_path=sys.path, checkout=str(settings.checkout_root()),
    index=str(_pretrained.index_path()), cards=str(settings.cards_dir()), file=model.pretrained_cfg["file"],
    same_keys=sorted(card) == sorted(state), equal=[k for k in card if torch.equal(card[k], state[k])],
    n=len(card))))
'''


def _result(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_wheel_holds_the_package_and_its_index_of_published_weights_only(installed):
    names = zipfile.ZipFile(installed[2]).namelist()
    assert 'robust_zoo/published.json' in names and 'robust_zoo/models/_hub.py' in names
    top = {n.split('/')[0] for n in names}
    assert top == {'robust_zoo', installed[2].name.split('-py')[0] + '.dist-info'}, top
    for left_out in ('tests', 'train', 'experiments', 'model_cards', 'benchmarks', 'docs'):
        assert not any(left_out in n.split('/')[:-1] for n in names), left_out
    assert not any(n.endswith(('.safetensors', '.pt', '.png')) for n in names)


def test_an_installed_wheel_loads_published_weights_from_the_cards_folder_the_setting_names(installed, tmp_path):
    python, site_packages, _ = installed
    cards = tmp_path / 'my cards'
    shutil.copytree(CARDS / NAME, cards / NAME)
    out = _result(_run(python, LOAD, tmp_path, ROBUST_ZOO_MODEL_CARDS=str(cards)))
    assert 'error' not in out, out
    # the installed package, not the checkout: no sys.path entry is the checkout, and it knows it is not in one
    assert Path(out['robust_zoo']) == site_packages / 'robust_zoo' / '__init__.py'
    assert str(ROOT) not in out['sys_path'] and out['checkout'] == 'None'
    assert Path(out['index']) == site_packages / 'robust_zoo' / 'published.json'
    # the weights are the card's, found in the folder the setting names
    assert Path(out['cards']) == cards and Path(out['file']) == cards / NAME / 'model.safetensors'
    assert out['same_keys'] and out['n'] > 0 and len(out['equal']) == out['n']


def test_an_installed_wheel_without_cards_or_network_says_what_to_do(installed, tmp_path):
    python, site_packages, _ = installed
    out = _result(_run(python, LOAD, tmp_path))
    assert out.get('error') == 'PublishedWeightsError', out
    message = out['message']
    assert f'robust_zoo/{NAME}' in message
    # where it looked (the user cache's cards folder, not the checkout's) and the three ways out
    assert str(tmp_path / 'rz-cache' / 'model_cards' / NAME) in message and str(ROOT) not in message
    assert 'HF_HUB_OFFLINE=1 is set: unset it to download' in message
    assert f'https://huggingface.co/{INDEX[NAME]["hf_hub_id"]}' in message
    assert 'ROBUST_ZOO_MODEL_CARDS' in message
