"""Figures of an evaluation: accuracy vs attack steps, accuracy vs budget, and the loss landscape.

matplotlib is imported inside the drawing functions (its object-oriented API on the Agg canvas, no pyplot
and no global backend switch), so `import robust_zoo` does not import it. The numbers come from the checks
of `evaluate(..., checks='full')` (their `data` field) and from `loss_landscape`.
"""
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['loss_landscape', 'plot_accuracy_vs_eps', 'plot_accuracy_vs_steps', 'plot_loss_landscape',
           'save_eval_plots']

PathLike = Union[str, os.PathLike]


def _curve(check_or_curve: Any, key: str) -> Tuple[list, list, Dict[str, Any]]:
    """(x values, accuracies, the whole data dict) from a check dict (with `data`), its `data` dict
    ({key: [...], 'accuracy': [...]}), or a plain mapping {x: accuracy}."""
    data = check_or_curve.get('data', check_or_curve) if isinstance(check_or_curve, Mapping) else None
    if data is None:
        raise TypeError(f'expected a check dict, its data, or a mapping {{{key}: accuracy}}, '
                        f'got {type(check_or_curve)}.')
    if key in data and 'accuracy' in data:
        xs, acc = list(data[key]), list(data['accuracy'])
    else:
        items = sorted((float(k), float(v)) for k, v in data.items())
        xs, acc, data = [k for k, _ in items], [v for _, v in items], {}
    if not xs or len(xs) != len(acc):
        raise ValueError(f'empty or ragged curve: {len(xs)} {key} values, {len(acc)} accuracies.')
    return xs, acc, data


def _figure(size: Tuple[float, float] = (4.5, 3.4)):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=120)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format='png')
    return path


def plot_accuracy_vs_steps(check_or_curve: Any, path: PathLike, *, title: Optional[str] = None) -> Path:
    """Robust accuracy against the number of PGD steps (log scale), from the `steps convergence` check
    (or {'steps': [...], 'accuracy': [...]}, or {steps: accuracy}). A converged attack ends flat."""
    steps, acc, data = _curve(check_or_curve, 'steps')
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot(steps, [100 * a for a in acc], marker='o')
    ax.set_xscale('log')
    ax.set_xticks(steps, [str(int(s)) if float(s).is_integer() else f'{s:g}' for s in steps])
    ax.set_xlabel('PGD steps')
    ax.set_ylabel('robust accuracy (%)')
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    extra = f", {data['norm']} eps {data['eps']:.4g}" if 'norm' in data and 'eps' in data else ''
    ax.set_title(title or f'accuracy vs attack steps{extra}', fontsize=9)
    return _save(fig, path)


def plot_accuracy_vs_eps(check_or_curve: Any, path: PathLike, *, threat_eps: Optional[float] = None,
                         title: Optional[str] = None) -> Path:
    """Robust accuracy against the budget, from the `eps sweep` check (or {'eps': [...], 'accuracy': [...]},
    or {eps: accuracy}); the threat model's eps (from the check, or `threat_eps`) is marked, and chance."""
    eps, acc, data = _curve(check_or_curve, 'eps')
    threat_eps = data.get('threat_eps') if threat_eps is None else threat_eps
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot(eps, [100 * a for a in acc], marker='o', label='PGD' + (f"-{data['steps']}" if 'steps' in data else ''))
    if threat_eps is not None:
        ax.axvline(threat_eps, color='C3', linestyle='--', label=f'threat eps {threat_eps:.4g}')
    if 'chance' in data:
        ax.axhline(100 * data['chance'], color='gray', linestyle=':', label='chance')
    ax.set_xlabel(f"{data.get('norm', '')} eps".strip())
    ax.set_ylabel('robust accuracy (%)')
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or 'accuracy vs budget', fontsize=9)
    return _save(fig, path)


def loss_landscape(model: nn.Module, x: torch.Tensor, y: Union[int, torch.Tensor], eps: float,
                   resolution: int = 21, *, norm: str = 'Linf', seed: int = 0,
                   batch_size: int = 256) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cross-entropy of `model` at `clamp(x + a * u + b * v, 0, 1)` on a `resolution` x `resolution` grid
    of a, b in [-eps, eps] (as in Smooth Adversarial Training's figure): u is the adversarial direction
    (sign of the input gradient of the loss for Linf, the normalized gradient for L2), v a Rademacher
    direction (normalized for L2), both of unit budget. `resolution` is odd, so the centre is x itself.

    Returns `(alphas, betas, grid)` with `grid[i, j]` the loss at `alphas[i]`, `betas[j]` (fp32, on the
    cpu). Runs in fp32 outside autocast, in the model's current mode."""
    if resolution < 3 or resolution % 2 == 0:
        raise ValueError(f'resolution must be odd and >= 3 (the centre is the clean point), got {resolution}.')
    if norm not in ('Linf', 'L2'):
        raise ValueError(f"norm must be 'Linf' or 'L2', got {norm!r}.")
    x = x.detach().float()
    x = x.unsqueeze(0) if x.ndim == 3 else x
    if len(x) != 1:
        raise ValueError(f'loss_landscape takes one image, got a batch of {len(x)}.')
    y = torch.as_tensor(y, device=x.device).long().view(1)
    with torch.autocast(x.device.type, enabled=False):
        xg = x.clone().requires_grad_(True)
        grad = torch.autograd.grad(F.cross_entropy(model(xg).float(), y), xg)[0]
        gen = torch.Generator().manual_seed(seed)
        v = (torch.randint(0, 2, x.shape, generator=gen) * 2 - 1).to(x)
        if norm == 'Linf':
            u = grad.sign()
        else:
            u = grad / grad.norm().clamp_min(1e-12)
            v = v / v.norm()
        half = resolution // 2
        coeffs = torch.arange(-half, half + 1, dtype=torch.float64) * (eps / half)  # exactly 0 at the centre
        a, b = torch.meshgrid(coeffs.float(), coeffs.float(), indexing='ij')
        shape = (-1,) + (1,) * (x.ndim - 1)
        a, b = a.reshape(shape).to(x.device), b.reshape(shape).to(x.device)
        points = (x + a * u + b * v).clamp(0, 1)
        with torch.no_grad():
            losses = torch.cat([F.cross_entropy(model(p).float(), y.expand(len(p)), reduction='none')
                                for p in points.split(batch_size)])
    return coeffs.float(), coeffs.float(), losses.view(resolution, resolution).cpu()


def plot_loss_landscape(model: nn.Module, x: torch.Tensor, y: Union[int, torch.Tensor], path: PathLike, *,
                        eps: float, resolution: int = 21, norm: str = 'Linf', seed: int = 0,
                        title: Optional[str] = None) -> Path:
    """Draw `loss_landscape` as filled contours, the axes in units of eps, the clean point marked."""
    alphas, betas, grid = loss_landscape(model, x, y, eps, resolution, norm=norm, seed=seed)
    fig = _figure((4.6, 3.8))
    ax = fig.add_subplot()
    levels = 20 if float(grid.max() - grid.min()) > 1e-9 else None
    cs = ax.contourf((betas / eps).numpy(), (alphas / eps).numpy(), grid.numpy(), levels=levels, cmap='viridis') \
        if levels else ax.imshow(grid.numpy(), extent=(-1, 1, -1, 1), origin='lower', cmap='viridis')
    fig.colorbar(cs, ax=ax, label='cross-entropy')
    ax.plot([0], [0], marker='x', color='white')
    ax.set_xlabel(f'random (Rademacher) direction, x eps ({norm} {eps:.4g})')
    ax.set_ylabel('adversarial direction, x eps')
    ax.set_title(title or 'loss landscape around a test point', fontsize=9)
    return _save(fig, path)


def _checks_of(result: Any) -> Sequence[Dict[str, Any]]:
    return result['checks'] if isinstance(result, Mapping) else result.checks


def save_eval_plots(result: Any, model: Optional[nn.Module] = None,
                    data: Optional[Tuple[torch.Tensor, torch.Tensor]] = None, out_dir: PathLike = '.', *,
                    resolution: int = 21) -> Dict[str, Path]:
    """Write `accuracy_vs_steps.png` and `accuracy_vs_eps.png` (when `result`, an `EvalRecord` or its
    `to_dict()`, carries the `steps convergence` / `eps sweep` curves of `checks='full'`) and
    `loss_landscape.png` (when `model` and `data` are given: around the first test point the model
    classifies correctly, else the first one, at the threat model's budget) into `out_dir`.
    Returns {name: path} of the files written."""
    out_dir = Path(out_dir)
    checks = {c['name']: c for c in _checks_of(result) if 'data' in c}
    threat = result['threat_model'] if isinstance(result, Mapping) else result.threat_model
    written: Dict[str, Path] = {}
    if 'steps convergence' in checks:
        written['accuracy_vs_steps'] = plot_accuracy_vs_steps(checks['steps convergence'],
                                                              out_dir / 'accuracy_vs_steps.png')
    if 'eps sweep' in checks:
        written['accuracy_vs_eps'] = plot_accuracy_vs_eps(checks['eps sweep'], out_dir / 'accuracy_vs_eps.png',
                                                          threat_eps=threat['eps'])
    if model is not None and data is not None and len(data[0]):
        device = next(iter([*model.parameters(), *model.buffers()]), torch.empty(0)).device
        was_training = model.training
        model.eval()
        try:
            x, y = data[0][:256].to(device), data[1][:256].to(device)
            with torch.no_grad(), torch.autocast(device.type, enabled=False):
                correct = (model(x.float()).argmax(1) == y).nonzero().flatten()
            i = int(correct[0]) if len(correct) else 0
            written['loss_landscape'] = plot_loss_landscape(
                model, x[i], y[i], out_dir / 'loss_landscape.png', eps=threat['eps'], resolution=resolution,
                norm=threat.get('norm', 'Linf'), title=f"loss landscape, test point {i}, {threat.get('id', '')}")
        finally:
            model.train(was_training)
    return written

