"""robust_zoo._io: atomic writes keep the old file when a write fails; digests are of the bytes."""
import hashlib
import json

import pytest
import torch

from robust_zoo import _io


def test_failed_atomic_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / 'record.json'
    _io.atomic_write_json(target, {'done': 1})

    def broken(tmp):
        open(tmp, 'w').write('{"half')
        raise KeyboardInterrupt  # a run killed mid-write

    with pytest.raises(KeyboardInterrupt):
        _io.atomic_write(target, broken)
    assert json.loads(target.read_text()) == {'done': 1}
    assert [p.name for p in tmp_path.iterdir()] == ['record.json']


def test_atomic_writes_of_text_bytes_and_json(tmp_path):
    assert _io.atomic_write_text(tmp_path / 'a' / 't.txt', 'hi').read_text() == 'hi'
    assert _io.atomic_write_bytes(tmp_path / 'b.bin', b'\x00\x01').read_bytes() == b'\x00\x01'
    assert _io.atomic_write_json(tmp_path / 'c.json', [1, 2]).read_text().endswith('\n')


def test_safetensors_round_trip_and_clear_error_for_a_corrupt_file(tmp_path):
    path = _io.save_safetensors({'w': torch.arange(4.0)}, tmp_path / 'w.safetensors', {'k': 'v'})
    assert torch.equal(_io.load_safetensors(path)['w'], torch.arange(4.0))
    path.write_bytes(path.read_bytes()[:10])
    with pytest.raises(_io.UnreadableFileError, match='truncated or corrupt'):
        _io.load_safetensors(path)
    with pytest.raises(_io.UnreadableFileError, match='does not exist'):
        _io.check_safetensors(tmp_path / 'missing.safetensors')


def test_sha256_file_sees_a_rewrite(tmp_path):
    path = tmp_path / 'f'
    path.write_bytes(b'one')
    assert _io.sha256_file(path) == hashlib.sha256(b'one').hexdigest()
    path.write_bytes(b'two!')
    assert _io.sha256_file(path) == hashlib.sha256(b'two!').hexdigest()


def test_parameter_digest_changes_with_any_parameter():
    model = torch.nn.Linear(3, 2)
    before = _io.parameter_digest(model)
    with torch.no_grad():
        model.bias[0] += 1
    assert _io.parameter_digest(model) != before
