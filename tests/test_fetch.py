"""robust-zoo fetch against a real HTTP server on the loopback address (ROBUST_ZOO_DOWNLOAD_BASE_URL): synthetic
checkpoints in the sources' formats at full size (SAT's ResNet-50 TF checkpoint, RobustBench's Dai2021 .pt in
robust_paf's training layout), Google Drive's confirm page, an error page, a truncated file, dropped connections,
no network. The user cache is a temporary folder (ROBUST_ZOO_CACHE), loads happen from another working folder."""
import http.server
import importlib.util
import json
import socket
import struct
import sys
import threading
import urllib.parse

import pytest
import timm
import torch
from safetensors.torch import load_file
from torch import nn

from robust_zoo import settings
from robust_zoo.cli import main
from robust_zoo.convert import TARGETS, convert, list_targets
from robust_zoo.convert.fetch import SAT_GDRIVE_IDS, FetchError, download_file, fetch, source_files

HAS_TF = importlib.util.find_spec('tensorflow') is not None
DAI = 'wrn_28_10_pssilu_at.rb_dai2021'
list_targets()  # imports the sources, which register the targets
DAI_ID = TARGETS[DAI].extra['gdrive_id']
SAT = 'resnet50_silu_at.sat_in1k'
SAT_INDEX, SAT_DATA = SAT_GDRIVE_IDS['Res50-silu']
DRIVE_ERROR_PAGE = (b'<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body>Too many '
                    b'users have viewed or downloaded this file recently.</body></html>')


class Drive(http.server.ThreadingHTTPServer):
    """`/download?id=ID`: files[ID] is (bytes, how); how: 'file' (Range honoured), 'norange' (Range ignored),
    'page' (bytes are an HTML page), 'confirm' (Drive's virus-scan form first, the file with its uuid),
    'drop' (the first `drops` responses stop halfway and close the connection), 'reset' (the first `drops`
    responses are reset after their headers)."""

    def __init__(self):
        super().__init__(('127.0.0.1', 0), _Handler)
        self.files, self.requests, self.drops = {}, [], 1

    @property
    def url(self):
        return f'http://127.0.0.1:{self.server_address[1]}'


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        server = self.server
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(self.path).query))
        server.requests.append((query.get('id'), self.headers.get('Range'), query.get('uuid')))
        if query.get('id') not in server.files:
            self.send_error(404)
            return
        data, how = server.files[query['id']]
        if how == 'page' or (how == 'confirm' and 'uuid' not in query):
            body = data if how == 'page' else (
                f'<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>'
                f'<form id="download-form" action="/download" method="get"><input type="submit" value="Download '
                f'anyway"/><input type="hidden" name="id" value="{query["id"]}"><input type="hidden" name="export" '
                f'value="download"><input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" '
                f'value="1234"></form></body></html>').encode()
            self._send(200, body, 'text/html; charset=utf-8')
            return
        start = 0
        rng = self.headers.get('Range')
        if rng and how in ('file', 'drop', 'confirm', 'reset'):
            start = int(rng.split('=')[1].split('-')[0])
        headers = {'Content-Range': f'bytes {start}-{len(data) - 1}/{len(data)}'} if start else {}
        if how == 'reset' and server.drops > 0:  # headers, then a TCP reset before any byte of the body
            server.drops -= 1
            self.send_response(200)
            self.send_header('Content-Length', str(len(data)))
            self.end_headers()
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        if how == 'drop' and server.drops > 0:
            server.drops -= 1
            self.send_response(206 if start else 200)
            self.send_header('Content-Length', str(len(data) - start))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data[start:start + (len(data) - start) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self._send(206 if start else 200, data[start:], 'application/octet-stream', headers)

    def _send(self, status, body, ctype, headers=None):
        self.send_response(status)
        self.send_header('Content-Type', ctype)
        self.send_header('Content-Length', str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def drive(monkeypatch, tmp_path):
    server = Drive()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv('ROBUST_ZOO_DOWNLOAD_BASE_URL', server.url)
    monkeypatch.setenv('ROBUST_ZOO_CACHE', str(tmp_path / 'cache'))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    from huggingface_hub import constants as hf_constants
    monkeypatch.setattr(hf_constants, 'HF_HUB_OFFLINE', True)
    monkeypatch.setattr(hf_constants, 'HF_HUB_CACHE', str(tmp_path / 'hf'))
    yield server
    server.shutdown()
    server.server_close()


def _loadable():
    """What pretrained=True could load for `name`: any model.safetensors under the fetched folder."""
    return sorted(p.relative_to(settings.fetched_dir()) for p in settings.fetched_dir().rglob('*.safetensors')) \
        if settings.fetched_dir().exists() else []


@pytest.fixture(scope='module')
def dai_checkpoint(tmp_path_factory):
    """Dai2021Parameterizing at full size, as RobustBench builds it, saved in robust_paf's train.py layout."""
    from test_convert_robustbench import _randomize, _robustbench_file
    paf = _robustbench_file('paf_wide_resnet')
    torch.manual_seed(0)
    reference = _randomize(paf.pssilu_wrn_28_10(num_classes=10))
    opt = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    path = tmp_path_factory.mktemp('dai') / 'Dai2021Parameterizing.pt'
    state = nn.DataParallel(reference).state_dict()
    torch.save(dict(epoch=3, arch='wrn-28-10', state_dict=state, best_prec1=torch.tensor(61.5),
                    optimizer=opt.state_dict(), swadict={}), path)
    return reference, path.read_bytes()


@pytest.fixture(scope='module')
def sat_checkpoint(tmp_path_factory):
    """SAT's Res50-silu at full size: the .index and .data of a name-based TF checkpoint with its names."""
    if not HAS_TF:
        pytest.skip('TensorFlow is not installed: run `make .venv/.test-extras`')
    import tensorflow as tf
    from test_convert_sat import sat_resnet_variables, write_tf1_checkpoint
    folder = tmp_path_factory.mktemp('sat')
    write_tf1_checkpoint(tf, folder / 'Res50-silu', sat_resnet_variables('silu', seed=7), graph_saver=False)
    return folder, (folder / 'Res50-silu.index').read_bytes(), (folder / 'Res50-silu.data-00000-of-00001').read_bytes()


def _logits(model, size, seed=3):
    with torch.no_grad():
        return model.eval()(torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(seed)))


# --- the headline: fetch, then pretrained=True by the untagged name from another folder -----------------------

def test_fetch_sat_resnet50_then_the_untagged_name_loads_it_anywhere(drive, sat_checkpoint, tmp_path, monkeypatch):
    folder, index, data = sat_checkpoint
    drive.files = {SAT_INDEX: (index, 'file'), SAT_DATA: (data, 'confirm')}  # the big file behind Drive's form
    assert main(['fetch', SAT, '--quiet']) == 0
    fetched = settings.fetched_dir() / SAT
    assert {p.name for p in fetched.iterdir()} == {'model.safetensors', 'config.json', 'README.md', 'conversion.json'}
    assert [r for r in drive.requests if r[0] == SAT_DATA] == [(SAT_DATA, None, None), (SAT_DATA, None, '1234')]
    record = json.loads((fetched / 'conversion.json').read_text())['source_files']
    import hashlib
    assert record['Res50-silu.data-00000-of-00001']['sha256'] == hashlib.sha256(data).hexdigest()
    card = (fetched / 'README.md').read_text()
    assert hashlib.sha256(index).hexdigest() in card and "cv2's cubic resize (no antialiasing)" in card
    assert not (settings.cache_dir() / 'downloads' / SAT).exists()  # the sources go once converted

    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    model = timm.create_model('robust_zoo/resnet50_silu_at', pretrained=True)
    assert model.pretrained_cfg['tag'] == 'sat_in1k' and type(model.maxpool).__name__ == 'MaxPool2dSame'
    direct = convert('sat-resnet50', folder / 'Res50-silu.index', SAT)
    assert torch.equal(_logits(model, 224), _logits(direct, 224))
    assert main(['fetch', SAT, '--quiet']) == 0 and len(drive.requests) == 3  # already here: nothing downloaded


def test_fetch_robustbench_dai_then_untagged_pretrained_matches_robustbench(drive, dai_checkpoint, tmp_path,
                                                                            monkeypatch):
    reference, data = dai_checkpoint
    drive.files = {DAI_ID: (data, 'file')}
    path = fetch(DAI, progress=False)
    assert path == settings.fetched_dir() / DAI
    monkeypatch.chdir(tmp_path)
    model = timm.create_model('robust_zoo/wrn_28_10_pssilu_at', pretrained=True)
    assert model.pretrained_cfg['tag'] == 'rb_dai2021'
    assert (_logits(model, 32) - _logits(reference, 32)).abs().max() <= 1e-4

    # the digest is recorded: another file under the same id is refused, and the fetched folder stays as it was
    before = load_file(str(path / 'model.safetensors'))
    drive.files = {DAI_ID: (data[:-4096] + bytes(4096), 'file')}
    with pytest.raises(FetchError, match='sha256 mismatch') as e:
        fetch(DAI, force=True, progress=False)
    assert 'the download was deleted' in str(e.value)
    assert not any((settings.cache_dir() / 'downloads').rglob('*.pt*'))
    after = load_file(str(path / 'model.safetensors'))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


# --- failures leave nothing loadable ------------------------------------------------------------------------------

def test_a_web_page_instead_of_the_file_is_a_clear_error(drive, capsys):
    drive.files = {DAI_ID: (DRIVE_ERROR_PAGE, 'page')}
    assert main(['fetch', DAI, '--quiet']) == 2
    err = capsys.readouterr().err
    assert 'answered with a web page ("Google Drive - Quota exceeded"), not the file' in err
    assert 'Traceback' not in err and f'https://drive.google.com/uc?id={DAI_ID}' in err
    assert _loadable() == [] and not any(p.is_file() for p in settings.cache_dir().rglob('*'))
    with pytest.raises(RuntimeError, match=f'robust-zoo fetch {DAI}'):
        timm.create_model(f'robust_zoo/{DAI}', pretrained=True)


def test_a_truncated_file_is_a_clear_error_and_is_deleted(drive, dai_checkpoint):
    _, data = dai_checkpoint
    drive.files = {DAI_ID: (data[:len(data) // 2], 'file')}  # a complete response holding half the checkpoint
    with pytest.raises(FetchError, match='do not convert.*truncated download') as e:
        fetch(DAI, progress=False)
    assert 'They were deleted' in str(e.value)
    assert _loadable() == [] and not any((settings.cache_dir() / 'downloads').rglob('*'))
    assert [p.name for p in settings.fetched_dir().iterdir()] == []  # no temporary folder left either


def test_a_truncated_tf_data_file_is_a_clear_error(drive, sat_checkpoint):
    _, index, data = sat_checkpoint
    drive.files = {SAT_INDEX: (index, 'file'), SAT_DATA: (data[:len(data) // 3], 'file')}
    with pytest.raises(FetchError, match=r'cannot read .* truncated or corrupt \.data file'):
        fetch(SAT, progress=False)
    assert _loadable() == []


def test_tensorflow_is_asked_for_by_name_before_downloading(drive, monkeypatch):
    monkeypatch.setitem(sys.modules, 'tensorflow', None)
    with pytest.raises(FetchError, match=r'pip install "robust-zoo\[convert-tf\]" \(nothing was downloaded\)'):
        fetch(SAT, progress=False)
    assert drive.requests == []


def test_no_network_is_one_error_with_the_source_and_the_manual_route(monkeypatch, tmp_path, capsys):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    monkeypatch.setenv('ROBUST_ZOO_DOWNLOAD_BASE_URL', f'http://127.0.0.1:{port}')
    monkeypatch.setenv('ROBUST_ZOO_CACHE', str(tmp_path / 'cache'))
    assert main(['fetch', DAI, '--quiet']) == 2
    err = capsys.readouterr().err
    assert err.count('robust-zoo: error:') == 1 and 'Traceback' not in err and 'cannot reach' in err
    assert f'https://drive.google.com/uc?id={DAI_ID}' in err
    assert f'robust-zoo fetch {DAI} --from FOLDER' in err and 'robust-zoo convert robustbench-paf-wrn' in err


def test_the_manual_route_fetch_from_a_downloaded_file(drive, dai_checkpoint, tmp_path, capsys):
    reference, data = dai_checkpoint
    own = tmp_path / 'mine' / 'Dai2021Parameterizing.pt'
    own.parent.mkdir()
    own.write_bytes(data)
    assert main(['fetch', 'wrn_28_10_pssilu_at', '--from', str(own), '--quiet']) == 0  # untagged: the default tag
    assert drive.requests == [] and own.is_file()  # nothing downloaded, the user's file kept
    info = json.loads((settings.fetched_dir() / DAI / 'conversion.json').read_text())
    assert info['fetched'] == 'from a local folder'
    model = timm.create_model(f'robust_zoo/{DAI}', pretrained=True)
    assert (_logits(model, 32) - _logits(reference, 32)).abs().max() <= 1e-4
    capsys.readouterr()
    assert main(['fetch', '--list']) == 0
    listed = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert listed[DAI] == f'here: {settings.fetched_dir() / DAI}' and listed[SAT] == 'not fetched'


# --- the downloader ----------------------------------------------------------------------------------------------

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


def test_a_dropped_connection_resumes_with_range(drive, tmp_path):
    drive.files = {'x': (PAYLOAD, 'drop')}
    dest = download_file(f'{drive.url}/download?id=x', tmp_path / 'x.bin', progress=False)
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / 'x.bin.part').exists()
    assert drive.requests == [('x', None, None), ('x', f'bytes={len(PAYLOAD) // 2}-', None)]


def test_a_connection_reset_before_the_first_byte_is_tried_again(drive, tmp_path):
    drive.files = {'x': (PAYLOAD, 'reset')}
    dest = download_file(f'{drive.url}/download?id=x', tmp_path / 'x.bin', progress=False)
    assert dest.read_bytes() == PAYLOAD and len(drive.requests) == 2


def test_a_dropped_connection_restarts_when_the_server_ignores_range(drive, tmp_path):
    drive.files = {'x': (PAYLOAD, 'drop')}
    drive.drops = 1
    url = f'{drive.url}/download?id=x'
    with pytest.raises(FetchError):  # one attempt only: the .part stays for the next run
        download_file(url, tmp_path / 'x.bin', progress=False, attempts=1)
    assert (tmp_path / 'x.bin.part').stat().st_size == len(PAYLOAD) // 2
    drive.files = {'x': (PAYLOAD, 'norange')}
    assert download_file(url, tmp_path / 'x.bin', progress=False).read_bytes() == PAYLOAD
    assert drive.requests[-1] == ('x', f'bytes={len(PAYLOAD) // 2}-', None)


def test_a_connection_that_always_drops_keeps_the_part_file_to_resume(drive, tmp_path):
    drive.files, drive.drops = {'x': (PAYLOAD, 'drop')}, 100
    url = f'{drive.url}/download?id=x'
    with pytest.raises(FetchError, match='dropped 2 times .* run the same command again to resume'):
        download_file(url, tmp_path / 'x.bin', progress=False, attempts=2)
    assert not (tmp_path / 'x.bin').exists() and (tmp_path / 'x.bin.part').is_file()
    drive.drops = 0
    assert download_file(url, tmp_path / 'x.bin', progress=False).read_bytes() == PAYLOAD
    assert drive.requests[-1][1] == f'bytes={len(PAYLOAD) // 2 + len(PAYLOAD) // 4}-'


def test_a_binary_file_that_starts_with_a_bracket_is_not_a_page(drive, tmp_path):
    data = b'<\x00\x01' + PAYLOAD
    drive.files = {'x': (data, 'file')}
    assert download_file(f'{drive.url}/download?id=x', tmp_path / 'x', progress=False).read_bytes() == data


def test_fetch_is_a_top_level_function():
    import robust_zoo
    assert robust_zoo.fetch is fetch


def test_every_target_has_its_authors_download():
    for target in TARGETS.values():
        files = source_files(target)
        assert files and all(len(f.gdrive_id) == 33 for f in files), target.name
        if target.source.startswith('sat-'):
            assert [f.name.split('.', 1)[1] for f in files] == ['index', 'data-00000-of-00001']


def test_the_converted_weights_page_lists_every_target_with_its_fetch_command():
    """docs/converted.md is converted_markdown()'s output: regenerate it when a target changes."""
    from pathlib import Path

    from robust_zoo.convert import converted_markdown
    page = (Path(__file__).parents[1] / 'docs' / 'converted.md').read_text()
    regenerate = ('python -c "from robust_zoo.convert import converted_markdown; '
                  "open('docs/converted.md', 'w').write(converted_markdown())\"")
    assert page == converted_markdown(), f'docs/converted.md is stale: {regenerate}'
    for name in TARGETS:
        assert f'`robust-zoo fetch {name}`' in page


def test_downloads_show_a_progress_bar(drive, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv('HF_HUB_DISABLE_PROGRESS_BARS', raising=False)
    drive.files = {'x': (PAYLOAD, 'file')}
    download_file(f'{drive.url}/download?id=x', tmp_path / 'x.bin')
    err = capsys.readouterr().err
    assert 'x.bin' in err and '100%' in err and '1.00M' in err


def test_fetched_weights_that_changed_since_the_fetch_are_refused(drive, dai_checkpoint):
    from safetensors.torch import load_file, save_file

    from robust_zoo.models._hub import PublishedWeightsError
    drive.files = {DAI_ID: (dai_checkpoint[1], 'file')}
    weights = fetch(DAI, progress=False) / 'model.safetensors'
    tensors = load_file(str(weights))
    key = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[key] = tensors[key] + 1
    save_file(tensors, str(weights))  # the same names and shapes, other values
    with pytest.raises(PublishedWeightsError, match='conversion.json'):
        timm.create_model(f'robust_zoo/{DAI}', pretrained=True)
