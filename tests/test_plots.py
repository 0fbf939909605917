"""Figures of an evaluation: valid PNGs, the landscape's numbers, and no matplotlib on `import robust_zoo`."""
import dataclasses
import json
import subprocess
import sys

import pytest
import timm
import torch
import torch.nn.functional as F

import robust_zoo  # noqa: F401
from robust_zoo.evaluation import evaluate
from robust_zoo.evaluation.plots import (
    loss_landscape, plot_accuracy_vs_eps, plot_accuracy_vs_steps, save_eval_plots,
)
from robust_zoo.threat_models import ThreatModel

PNG = b'\x89PNG\r\n\x1a\n'


def _is_png(path):
    return path.exists() and path.read_bytes()[:8] == PNG and path.stat().st_size > 1000


@pytest.fixture(scope='module')
def mlp():
    torch.manual_seed(0)
    return timm.create_model('robust_zoo/mlp3_silu_at').eval()


def test_landscape_centre_is_the_clean_loss_and_the_adversarial_axis_climbs(mlp):
    x, y = torch.rand(1, 28, 28), 3
    alphas, betas, grid = loss_landscape(mlp, x, y, eps=0.05, resolution=7)
    assert grid.shape == (7, 7) and alphas[3] == 0 and betas[3] == 0
    assert alphas[0] == pytest.approx(-0.05) and alphas[-1] == pytest.approx(0.05)
    with torch.no_grad():
        clean = F.cross_entropy(mlp(x[None]), torch.tensor([y]))
    assert grid[3, 3].item() == pytest.approx(clean.item(), rel=1e-5)
    assert grid[-1, 3] > grid[3, 3] > grid[0, 3]  # along the signed gradient the loss goes up
    assert loss_landscape(mlp, x, y, eps=0.05, resolution=7)[2].equal(grid)  # seeded random direction
    with pytest.raises(ValueError, match='odd'):
        loss_landscape(mlp, x, y, eps=0.05, resolution=6)


def test_curve_plots_are_pngs(tmp_path):
    steps = {'name': 'steps convergence', 'status': 'PASS', 'detail': '',
             'data': {'steps': [10, 50, 200], 'accuracy': [0.5, 0.45, 0.44], 'eps': 0.1, 'norm': 'Linf'}}
    assert _is_png(plot_accuracy_vs_steps(steps, tmp_path / 'steps.png'))
    sweep = {'eps': [0, 0.025, 0.05, 0.1, 0.5], 'accuracy': [0.9, 0.8, 0.6, 0.4, 0.0], 'chance': 0.1,
             'threat_eps': 0.1, 'norm': 'Linf'}
    assert _is_png(plot_accuracy_vs_eps(sweep, tmp_path / 'sub' / 'eps.png'))


def test_curves_are_read_from_a_check_its_data_or_a_mapping():
    from robust_zoo.evaluation.plots import _curve
    data = {'steps': [10, 50], 'accuracy': [0.5, 0.4], 'eps': 0.1}
    assert _curve({'name': 'steps convergence', 'data': data}, 'steps') == ([10, 50], [0.5, 0.4], data)
    assert _curve(data, 'steps')[:2] == ([10, 50], [0.5, 0.4])
    assert _curve({50: 0.4, 10: 0.5}, 'steps')[:2] == ([10, 50], [0.5, 0.4])  # a plain {x: accuracy}, sorted
    with pytest.raises(TypeError):
        _curve([0.1, 0.2], 'eps')
    with pytest.raises(ValueError, match='ragged'):
        _curve({'eps': [0, 1], 'accuracy': [1.0]}, 'eps')


def test_save_eval_plots_writes_the_three_figures(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 10)).eval()
    x = torch.rand(12, 1, 4, 4)
    with torch.no_grad():
        y = model(x).argmax(1)
    threat = ThreatModel('toy', 'toy', 'Linf', 0.05, ('pgd-2',), 12, 'none')
    result = evaluate(model, threat, data=(x, y), checks=['steps_convergence', 'eps_sweep'], probe=4)
    record = json.loads(result.to_json())  # the JSON record carries the curves
    written = save_eval_plots(record, model, (x, y), tmp_path, resolution=5)
    assert sorted(written) == ['accuracy_vs_eps', 'accuracy_vs_steps', 'loss_landscape']
    assert all(_is_png(p) and p.parent == tmp_path for p in written.values())
    # an EvalRecord without the curves, and no model: nothing to draw
    assert save_eval_plots(dataclasses.replace(result, checks=[]), out_dir=tmp_path / 'none') == {}
    assert not (tmp_path / 'none').exists()


def test_import_robust_zoo_does_not_import_matplotlib():
    """matplotlib loads only when a plot is drawn: a fresh interpreter that imports robust_zoo, builds a model and
    evaluates it has not imported it."""
    code = ('import sys, timm, torch, robust_zoo\n'
            'from robust_zoo.evaluation import evaluate\n'
            "model = timm.create_model('robust_zoo/mlp3_relu_at')\n"
            "evaluate(model, 'fashion-mnist-linf', attacks=['fgsm'],\n"
            "         data=(torch.rand(4, 1, 28, 28), torch.arange(4)))\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'mpl_toolkits')))\n")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == '[]', out.stdout
