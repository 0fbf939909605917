"""The main job: evaluate a published robust model under its threat model and print a table
(`run_published`); before any weights are published, a one-minute train-then-attack demo (`run_demo`)."""
import math
import time
from typing import Dict, Optional

import timm
import torch
import torch.nn.functional as F
from timm.optim import create_optimizer_v2

from .attacks import fgsm_rs
from .evaluation import evaluate
from .data import load_fashion_mnist
from .threat_models import get_threat_model
from .training import resolve_autocast

__all__ = ['FLAGSHIP', 'MAIN_JOB_ATTACKS', 'default_published_model', 'run_demo', 'run_published']

MAIN_JOB_ATTACKS = ('pgd-20', 'apgd-ce')
FLAGSHIP = 'lenet_wide_relu_at'  # the strongest published Fashion-MNIST model (docs/results.md): the main job's


def run_demo(model_name: str = 'resnet20_silu_at', train_samples: int = 12000, eval_samples: int = 500,
             batch_size: int = 128, lr: float = 0.1, seed: int = 0, amp: bool = True,
             data_dir: Optional[str] = None, log=print) -> Dict[str, float]:
    """FGSM-RS adversarial training (Wong et al.) for one pass over `train_samples`, then clean, FGSM and
    PGD-20 accuracy on the first `eval_samples` test images through `robust_zoo.evaluate`. Returns the
    accuracies (fractions)."""
    torch.manual_seed(seed)
    amp, message = resolve_autocast(amp, 'cpu', what='the demo trains')
    if message:
        log(message)
    threat = get_threat_model('fashion-mnist-linf')
    x_train, y_train = load_fashion_mnist('train', data_dir, n=train_samples)
    x_test, y_test = load_fashion_mnist('test', data_dir, n=eval_samples)
    model = timm.create_model(f'robust_zoo/{model_name}', num_classes=10, in_chans=1)
    n_params = sum(p.numel() for p in model.parameters())
    log(f'model robust_zoo/{model_name}: {n_params / 1e6:.2f}M parameters; threat model {threat.id} '
        f'({threat.norm}, eps {threat.eps})')

    optimizer = create_optimizer_v2(model, 'sgd', lr=lr, momentum=0.9, weight_decay=5e-4)
    steps = math.ceil(train_samples / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.3)
    autocast = torch.autocast('cpu', dtype=torch.bfloat16, enabled=amp)
    perm = torch.randperm(train_samples)
    model.train()
    t0, seen, correct = time.time(), 0, 0
    for step in range(steps):
        idx = perm[step * batch_size:(step + 1) * batch_size]
        xb, yb = x_train[idx], y_train[idx]
        with autocast:
            x_adv = fgsm_rs(model, xb, yb, eps=threat.eps)
            logits = model(x_adv)
            loss = F.cross_entropy(logits.float(), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sched.step()
        seen += len(yb)
        correct += (logits.argmax(1) == yb).sum().item()
        if (step + 1) % 20 == 0 or step + 1 == steps:
            log(f'train [{step + 1:>4}/{steps}] loss {loss.item():.3f}  adv acc {correct / seen:.3f}  '
                f'{seen / (time.time() - t0):.0f} img/s')
    train_seconds = time.time() - t0
    model.eval()
    result = evaluate(model, threat, attacks=['fgsm', 'pgd-20'], data=(x_test, y_test), n_examples=eval_samples,
                      seed=seed, model_name=f'robust_zoo/{model_name}')
    t = result.threat_model
    lo, hi = result.confidence_interval
    log(f'\nrobust_zoo/{model_name}, FGSM-RS adversarial training on {train_samples} Fashion-MNIST images '
        f'({steps} steps, {train_seconds:.0f} s), seed {seed}')
    log(f"evaluated with robust_zoo.evaluate on the first {result.n_examples} test images, {t['id']}: "
        f"{t['norm']} eps {t['eps']} ({result.seconds:.0f} s)\n")
    log('| attack | accuracy |')
    log('|---|---|')
    log(f'| none (clean) | {result.clean_accuracy:.3f} |')
    log(f"| FGSM | {result.attacks['fgsm']:.3f} |")
    log(f"| PGD-20 (random start, step {threat.step_size}) | {result.attacks['pgd-20']:.3f} |")
    log(f'| worst case per image | {result.robust_accuracy:.3f} (95% Wilson {lo:.3f}-{hi:.3f}) |')
    log('\nchecks: ' + '; '.join(f"{c['name']} {c['status']}" for c in result.checks))
    log('\nThis is a one-minute demo of the pipeline, not a published model (see the README).')
    return dict(clean=result.clean_accuracy, **result.attacks, robust=result.robust_accuracy)


def default_published_model() -> Optional[str]:
    """The published model the main job evaluates: the default tag (timm's, see
    robust_zoo.models._pretrained.with_published) of FLAGSHIP if it has weights, else of the first published
    architecture; None when nothing is published yet."""
    from timm.models import get_pretrained_cfg

    from .models._pretrained import load_published
    index = load_published()
    archs = sorted({e['architecture'] for e in index.values()}, key=lambda a: (a != FLAGSHIP, a))
    for arch in archs:
        cfg = get_pretrained_cfg(arch)
        if cfg is not None and f'{arch}.{cfg.tag}' in index:
            return f'{arch}.{cfg.tag}'
    return min(index) if index else None


def run_published(name: Optional[str] = None, n_examples: int = 100, attacks=MAIN_JOB_ATTACKS, seed: int = 0,
                  batch_size: int = 250, log=print) -> Dict[str, float]:
    """Load a published model with `pretrained=True` and evaluate it under the threat model its card names,
    on the first `n_examples` test images with `attacks` (PGD-20 and APGD-CE on 100 images: ~40 s on 2 idle CPU
    cores, APGD-CE's 100 iterations through pyautoattack being most of it);
    print the table next to the card's own numbers. Returns the accuracies (fractions)."""
    from .models._pretrained import load_published, not_published, stronger_text
    index = load_published()
    name = name or default_published_model()
    if name is None or name not in index:
        raise ValueError(not_published(str(name), index))
    entry = index[name]
    model = timm.create_model(f'robust_zoo/{name}', pretrained=True).eval()
    threat = get_threat_model(entry['threat_model'])
    log(f"robust_zoo/{name}: published weights (sha256 {entry['sha256'][:12]}...), threat model {threat.id} "
        f'({threat.norm}, eps {threat.eps:g}); evaluating the first {n_examples} test images with {", ".join(attacks)}')
    result = evaluate(model, threat, attacks=list(attacks), n_examples=n_examples, seed=seed, batch_size=batch_size,
                      model_name=f'robust_zoo/{name}')
    lo, hi = result.confidence_interval
    t = result.threat_model
    log(f"\nrobust_zoo/{name} under {t['id']} ({t['norm']}, eps {t['eps']:g}), first {result.n_examples} test images, "
        f'seed {seed}, {result.seconds:.0f} s\n')
    log('| attack | accuracy |')
    log('|---|---|')
    log(f'| none (clean) | {result.clean_accuracy:.3f} |')
    for spec, acc in result.attacks.items():
        log(f'| {spec} | {acc:.3f} |')
    log(f'| worst case per image | {result.robust_accuracy:.3f} (95% Wilson {lo:.3f}-{hi:.3f}) |')
    log('\nchecks: ' + '; '.join(f"{c['name']} {c['status']}" for c in result.checks))
    log(f"\nThe card (model_cards/{name}/README.md) reports clean {entry.get('clean_accuracy', float('nan')):.3f} and "
        f"robust {entry.get('robust_accuracy', float('nan')):.3f} ({', '.join(entry.get('attacks', [])) or '?'} on the "
        f"first {entry.get('n_examples', '?')} test images{stronger_text(entry)}); see it for the full evaluation.")
    return dict(clean=result.clean_accuracy, **result.attacks, robust=result.robust_accuracy)
