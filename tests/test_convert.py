"""The converter registry, its command and its docs (the sources themselves: test_convert_sat.py,
test_convert_robustbench.py)."""
import re
from pathlib import Path

import pytest
import timm
import torch

import robust_zoo  # noqa: F401
from robust_zoo.cli import main
from robust_zoo.convert import SOURCES, ConversionError, check_state_dict, convert, list_targets, targets_markdown

DOCS_PAGE = Path(__file__).resolve().parents[1] / 'docs' / 'converting.md'


def test_every_target_names_a_registered_source_and_builds():
    targets = list_targets()
    assert {t.source for t in targets} <= set(SOURCES)
    assert {'sat-resnet50', 'sat-efficientnet', 'robustbench-paf-wrn', 'robustbench-dm-wrn'} <= set(SOURCES)
    for t in targets:
        model = timm.create_model(f'robust_zoo/{t.name}', device='meta')
        assert model.pretrained_cfg['tag'] == t.name.split('.', 1)[1]


def test_docs_table_is_the_generated_one():
    block = re.search(r'<!-- converters:start -->\n(.*?)\n<!-- converters:end -->', DOCS_PAGE.read_text(), re.S)
    assert block is not None and block.group(1) == targets_markdown()


def test_help_documents_every_source_and_target(capsys):
    with pytest.raises(SystemExit):
        main(['convert', '--help'])
    out = capsys.readouterr().out
    for source in SOURCES:
        assert source in out
    for t in list_targets():
        assert t.name in out


def test_list_prints_the_targets(capsys):
    assert main(['convert', '--list']) == 0
    assert 'resnet50_silu_at.sat_in1k' in capsys.readouterr().out


def test_unknown_source_target_or_file_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(ConversionError, match='unknown source'):
        convert('caffe', tmp_path / 'x', 'resnet50_silu_at.sat_in1k')
    with pytest.raises(ConversionError, match='not a conversion target'):
        convert('sat-resnet50', tmp_path / 'x', 'resnet50_silu_at')
    with pytest.raises(ConversionError, match='converted from source'):
        convert('robustbench-dm-wrn', tmp_path / 'x', 'resnet50_silu_at.sat_in1k')
    with pytest.raises(ConversionError, match='no such checkpoint'):
        convert('sat-resnet50', tmp_path / 'missing.index', 'resnet50_silu_at.sat_in1k')
    assert main(['convert', 'sat-resnet50', str(tmp_path / 'missing.index'),
                 '--model', 'resnet50_silu_at.sat_in1k']) == 2
    assert 'no such checkpoint' in capsys.readouterr().err


def test_check_state_dict_names_every_kind_of_mismatch():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    check_state_dict(state, model, 'src')
    with pytest.raises(ConversionError, match=r'1 model tensors got no value \(0.bias\)'):
        check_state_dict({'0.weight': state['0.weight']}, model, 'src')
    with pytest.raises(ConversionError, match=r'no place in the model \(extra\)'):
        check_state_dict(dict(state, extra=torch.zeros(1)), model, 'src')
    with pytest.raises(ConversionError, match=r'0.weight: \(3, 3\) vs \(3, 2\)'):
        check_state_dict(dict(state, **{'0.weight': torch.zeros(3, 3)}), model, 'src')


def test_untagged_headline_name_points_to_its_converted_tag(tmp_path, monkeypatch):
    monkeypatch.setenv('ROBUST_ZOO_CACHE', str(tmp_path))  # nothing fetched
    with pytest.raises(RuntimeError) as e:
        timm.create_model('robust_zoo/resnet50_silu_at', pretrained=True)
    assert '`robust-zoo fetch resnet50_silu_at.sat_in1k`' in str(e.value)
