"""Sparta banks: exact round trip, freezing, mapping to deeper nets, clear errors for banks that do not fit."""
import json

import pytest
import timm
import torch
import torch.nn.functional as F

import robust_zoo  # noqa: F401
from robust_zoo.sparta_bank import SpartaBankError, bank_mapping, load_bank, read_bank, save_bank, sparta_units


def _trained_like(name='resnet20_sparta_at', seed=0):
    """A Sparta model whose units all differ (as after training), so a mapping mistake shows."""
    torch.manual_seed(seed)
    model = timm.create_model(f'robust_zoo/{name}')
    with torch.no_grad():
        for i, unit in enumerate(sparta_units(model).values()):
            unit.beta.fill_(1 + i)
            unit.attn.weight.normal_()
            unit.attn.bias.fill_(-i / 10)
    return model


@pytest.fixture
def bank(tmp_path):
    return save_bank(_trained_like(), tmp_path / 'bank.safetensors', dataset='fashion-mnist',
                     threat_model='fashion-mnist-linf', recipe='train/configs/fmnist_resnet20.yaml')


def test_round_trip_is_exact_and_keeps_provenance(bank):
    source = _trained_like()
    target = timm.create_model('robust_zoo/resnet20_sparta_at')
    mapping = load_bank(target, bank, mapping='exact')
    assert mapping == {n: n for n in sparta_units(source)}
    for (n, a), (_, b) in zip(sparta_units(source).items(), sparta_units(target).items()):
        assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters())), n
    units, meta = read_bank(bank)
    assert len(units) == 19 and meta['dataset'] == 'fashion-mnist' and meta['threat_model'] == 'fashion-mnist-linf'
    assert meta['recipe'].endswith('fmnist_resnet20.yaml') and meta['kernel_size'] == [3]
    # with every other weight copied, the bank's units alone make the target compute what the source does
    unit_keys = {f'{u}.{k}' for u, m in sparta_units(source).items() for k in m.state_dict()}
    missing, unexpected = target.load_state_dict(
        {k: v for k, v in source.state_dict().items() if k not in unit_keys}, strict=False)
    assert set(missing) == unit_keys and not unexpected
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(target.eval()(x), source.eval()(x), rtol=0, atol=0)


def test_freeze_really_freezes_the_bank_and_only_the_bank(bank):
    model = timm.create_model('robust_zoo/resnet56_sparta_at')
    load_bank(model, bank)
    bank_params = {id(p) for u in sparta_units(model).values() for p in u.parameters()}
    assert all(not p.requires_grad for u in sparta_units(model).values() for p in u.parameters())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, weight_decay=1e-3)
    model.train()
    loss = F.cross_entropy(model(torch.rand(8, 1, 28, 28)), torch.arange(8))
    loss.backward()
    opt.step()
    for n, p in model.named_parameters():
        changed = not torch.equal(before[n], p)
        assert changed != (id(p) in bank_params) or 'normalize' in n, n


def test_unfrozen_bank_trains(bank):
    """freeze=False: the bank's values are the starting point, and a training step moves them."""
    model = timm.create_model('robust_zoo/resnet20_sparta_at')
    load_bank(model, bank, freeze=False)
    units = sparta_units(model)
    assert all(p.requires_grad for u in units.values() for p in u.parameters())
    source = sparta_units(_trained_like())
    assert all(torch.equal(u.beta, source[n].beta) for n, u in units.items())
    before = {n: u.beta.detach().clone() for n, u in units.items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    F.cross_entropy(model.train()(torch.rand(8, 1, 28, 28)), torch.arange(8)).backward()
    opt.step()
    assert any(not torch.equal(before[n], u.beta) for n, u in units.items())


def test_relative_depth_mapping_to_resnet56():
    src = list(sparta_units(timm.create_model('robust_zoo/resnet20_sparta_at')))
    tgt = list(sparta_units(timm.create_model('robust_zoo/resnet56_sparta_at')))
    m = bank_mapping(src, tgt)
    assert m['act1'] == 'act1'
    # 9 target blocks take the nearest of 3 source blocks: 0,0,1,1,1,1,2,2,2 (round half up)
    assert [m[f'stages.1.{j}.act2'][len('stages.1.'):] for j in range(9)] == \
        [f'{b}.act2' for b in (0, 0, 1, 1, 1, 1, 2, 2, 2)]
    assert all(m[t].split('.')[1] == t.split('.')[1] for t in tgt if t != 'act1')  # same stage
    assert bank_mapping(src, src) == {s: s for s in src}


def test_loaded_deeper_net_uses_the_mapped_parameters(bank):
    model = timm.create_model('robust_zoo/resnet32_sparta_at')
    mapping = load_bank(model, bank)
    units, _ = read_bank(bank)
    for t, s in mapping.items():
        assert torch.equal(sparta_units(model)[t].attn.weight, units[s]['attn.weight'])
    assert model.sparta_bank_mapping == mapping


def test_mean_mapping_fits_any_cnn(bank):
    model = timm.create_model('robust_zoo/resnet18_sparta_at')
    load_bank(model, bank, mapping='mean')
    units, _ = read_bank(bank)
    mean_beta = torch.stack([u['beta'] for u in units.values()]).mean()
    assert all(torch.equal(u.beta, mean_beta) for u in sparta_units(model).values())


def test_incompatible_banks_say_why(bank, tmp_path):
    with pytest.raises(SpartaBankError, match='same number of stages'):
        load_bank(timm.create_model('robust_zoo/resnet18_sparta_at'), bank)
    with pytest.raises(SpartaBankError, match="mapping='exact'"):
        load_bank(timm.create_model('robust_zoo/resnet56_sparta_at'), bank, mapping='exact')
    with pytest.raises(SpartaBankError, match='kernel_size'):
        load_bank(timm.create_model('robust_zoo/resnet20_sparta_at', act_kwargs=dict(kernel_size=5)), bank)
    with pytest.raises(SpartaBankError, match='no Sparta activations'):
        load_bank(timm.create_model('robust_zoo/resnet20_relu_at'), bank)
    with pytest.raises(SpartaBankError, match='no Sparta activations'):
        save_bank(timm.create_model('robust_zoo/resnet20_relu_at'), tmp_path / 'x.safetensors')
    with pytest.raises(SpartaBankError, match='unknown mapping'):
        load_bank(timm.create_model('robust_zoo/resnet20_sparta_at'), bank, mapping='nearest')
    from safetensors.torch import save_file
    save_file({'w': torch.ones(1)}, tmp_path / 'weights.safetensors')
    with pytest.raises(SpartaBankError, match='not a Sparta bank'):
        read_bank(tmp_path / 'weights.safetensors')
    (tmp_path / 'junk.safetensors').write_bytes(b'junk')
    with pytest.raises(SpartaBankError, match='not a readable'):
        read_bank(tmp_path / 'junk.safetensors')
    with pytest.raises(SpartaBankError, match='does not exist'):
        read_bank(tmp_path / 'missing.safetensors')


def test_bank_metadata_is_plain_json(bank):
    from safetensors import safe_open
    with safe_open(str(bank), 'pt') as f:
        meta = json.loads(f.metadata()['robust_zoo'])
    assert meta['format'] == 'robust_zoo.sparta_bank/1' and meta['units'][0] == 'act1'


def test_create_model_takes_a_bank_file_or_a_published_name(bank, tmp_path, monkeypatch):
    model = timm.create_model('robust_zoo/resnet56_sparta_at', sparta_bank=str(bank))
    units, _ = read_bank(bank)
    assert torch.equal(sparta_units(model)['stages.2.8.act2'].attn.weight, units['stages.2.2.act2']['attn.weight'])
    assert not any(p.requires_grad for u in sparta_units(model).values() for p in u.parameters())
    model = timm.create_model('robust_zoo/resnet32_sparta_at', sparta_bank=str(bank), sparta_bank_freeze=False)
    assert all(p.requires_grad for u in sparta_units(model).values() for p in u.parameters())

    from robust_zoo._io import sha256_file
    from robust_zoo.models import _pretrained
    cards = tmp_path / 'cards'
    (cards / 'resnet20_sparta_at.fmnist_s0').mkdir(parents=True)
    (cards / 'resnet20_sparta_at.fmnist_s0' / 'sparta_bank.safetensors').write_bytes(bank.read_bytes())
    sha = sha256_file(bank)  # the card's Files table: what the bank is checked against
    (cards / 'resnet20_sparta_at.fmnist_s0' / 'README.md').write_text(
        f'| `sparta_bank.safetensors` | {bank.stat().st_size:,} | `{sha}` |\n')
    monkeypatch.setitem(_pretrained._state, 'cards_dir', str(cards))
    model = timm.create_model('robust_zoo/resnet56_sparta_at', sparta_bank='resnet20_sparta_at.fmnist_s0')
    assert model.sparta_bank_mapping['stages.0.0.act1'] == 'stages.0.0.act1'
    with pytest.raises(SpartaBankError, match='published banks: resnet20_sparta_at.fmnist_s0'):
        timm.create_model('robust_zoo/resnet56_sparta_at', sparta_bank='nope')
