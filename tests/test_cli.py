"""The `robust-zoo` command: listing models, the demo (main job) on a tiny budget, and error output."""
import pytest

from robust_zoo.cli import main
from robust_zoo.data import FASHION_MNIST_DIR


def test_list_prints_prefixed_names(capsys):
    assert main(['list', 'resnet20_*']) == 0
    names = capsys.readouterr().out.split()
    assert 'robust_zoo/resnet20_silu_at' in names and len(names) == 11


@pytest.mark.skipif(not FASHION_MNIST_DIR.exists(), reason='Fashion-MNIST not installed')
def test_demo_trains_attacks_and_prints_table(capsys):
    assert main(['demo', '--model', 'mlp3_silu_at', '--train-samples', '512', '--eval-samples', '50']) == 0
    out = capsys.readouterr().out
    assert '| PGD-20 (random start, step 0.01) |' in out and 'worst case per image' in out
    assert 'fashion-mnist-linf' in out


def test_user_errors_exit_2_without_traceback(capsys):
    assert main(['demo', '--model', 'resnet20_silo_at', '--train-samples', '8']) == 2
    err = capsys.readouterr().err
    assert err.startswith('robust-zoo: error:') and 'resnet20_silu_at' in err


@pytest.mark.skipif(not FASHION_MNIST_DIR.exists(), reason='Fashion-MNIST not installed')
def test_eval_loads_weights_and_writes_the_record(tmp_path, capsys):
    import json

    import timm
    from safetensors.torch import save_file
    weights = tmp_path / 'model.safetensors'
    save_file(timm.create_model('robust_zoo/mlp3_relu_at').state_dict(), weights)
    out = tmp_path / 'result.json'
    assert main(['eval', 'mlp3_relu_at', '--checkpoint', str(weights), '--n-examples', '20', '--attacks', 'fgsm',
                 '--output', str(out)]) == 0
    record = json.loads(out.read_text())
    assert record['n_examples'] == 20 and list(record['attacks']) == ['fgsm']
    assert f"| fgsm | {record['attacks']['fgsm']:.4f} |" in capsys.readouterr().out


def test_list_threat_models(capsys):
    assert main(['list', '--threat-models']) == 0
    out = capsys.readouterr().out
    assert 'imagenet-linf-sat' in out and 'fashion-mnist-linf' in out
