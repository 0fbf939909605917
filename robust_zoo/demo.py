"""The main job until the evaluator lands: adversarially train a small robust model on Fashion-MNIST for a
few minutes on CPU, then attack it under `fashion-mnist-linf` and print a results table."""
import math
import time
from typing import Dict, Optional

import timm
import torch
import torch.nn.functional as F
from timm.optim import create_optimizer_v2

from .attacks import fgsm_rs, pgd
from .data import load_fashion_mnist
from .threat_models import get_threat_model

__all__ = ['run_demo']


def _accuracy(model, x, y, batch_size, attack=None) -> float:
    correct = 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        if attack is not None:
            xb = attack(model, xb, yb)
        with torch.no_grad():
            correct += (model(xb).argmax(1) == yb).sum().item()
    return correct / len(x)


def run_demo(model_name: str = 'resnet20_silu_at', train_samples: int = 12000, eval_samples: int = 500,
             batch_size: int = 128, lr: float = 0.1, seed: int = 0, amp: bool = True,
             data_dir: Optional[str] = None, log=print) -> Dict[str, float]:
    """FGSM-RS adversarial training (Wong et al.) for one pass over `train_samples`, then clean, FGSM and
    PGD-20 accuracy on the first `eval_samples` test images. Returns the accuracies (fractions)."""
    torch.manual_seed(seed)
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
    model.eval()
    t1 = time.time()
    train_seconds = t1 - t0
    eps, step_size = threat.eps, threat.step_size
    results = {
        'clean': _accuracy(model, x_test, y_test, 250),
        'fgsm': _accuracy(model, x_test, y_test, 250, lambda m, x, y: pgd(
            m, x, y, eps=eps, steps=1, step_size=eps, random_start=False)),
        'pgd-20': _accuracy(model, x_test, y_test, 250, lambda m, x, y: pgd(
            m, x, y, eps=eps, steps=20, step_size=step_size)),
    }
    log(f'\nrobust_zoo/{model_name}, FGSM-RS adversarial training on {train_samples} Fashion-MNIST images '
        f'({train_seconds:.0f} s), seed {seed}')
    log(f'evaluated on the first {eval_samples} test images, {threat.id}: {threat.norm} eps {eps} '
        f'(fp32, eval mode, {time.time() - t1:.0f} s)\n')
    log('| attack | steps | step size | accuracy |')
    log('|---|---|---|---|')
    log(f"| none (clean) | - | - | {results['clean']:.3f} |")
    log(f"| FGSM | 1 | {eps} | {results['fgsm']:.3f} |")
    log(f"| PGD (random start) | 20 | {step_size} | {results['pgd-20']:.3f} |")
    log('\nThis is a one-minute demo of the pipeline, not a published model (see the README).')
    return results
