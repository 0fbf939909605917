"""`robust-zoo fetch NAME`: the authors' release of a conversion target, downloaded, converted, verified and kept in
the user's cache, so that `timm.create_model('robust_zoo/<name>', pretrained=True)` loads it from any folder.

    robust-zoo fetch resnet50_silu_at.sat_in1k       # or robust_zoo.fetch('resnet50_silu_at.sat_in1k')
    timm.create_model('robust_zoo/resnet50_silu_at', pretrained=True)   # untagged: its default converted tag

Files come from where the authors' own scripts take them: Google Drive ids of SAT's `ResNet/download_resnet.py`
and `EfficientNet/download_efficientnet.py` (the .index and .data files; the .meta graph is not needed) and of
RobustBench's `model_zoo/cifar10.py` (`gdrive_id`, what `robustbench.utils.load_model` downloads). Google Drive's
protocol: `<base>/download?id=ID&export=download&confirm=t`; a page instead of the file is either the
"can't scan for viruses" form (followed once, with its hidden fields) or an error page (over quota, no longer
shared), which stops the fetch with a clear error: RobustBench users' most common failure is such a page saved
as the checkpoint (`UnpicklingError: invalid load key '<'`). The base is `settings.download_base_url()`
(ROBUST_ZOO_DOWNLOAD_BASE_URL; the tests serve a loopback server there).

Every download goes to `<name>.part` in `cache_dir()/downloads/<arch>.<tag>/`; a dropped connection resumes with
an HTTP Range request where the server honours it (206), else restarts; a file shorter than its Content-Length
is never renamed from `.part`. The sha256 of each file is checked against the target's known digest
(`extra['sha256']`) or the one the last successful fetch recorded (`conversion.json`), converted with the target's
converter (everything mapped or a ConversionError), verified (the saved weights reload through timm to the same
logits) and stored in `settings.fetched_dir()/<arch>.<tag>/` (model.safetensors, config.json, README.md card,
conversion.json with the source files' digests) by one rename of a finished folder: a failure leaves nothing that
pretrained=True would load. The downloaded sources are deleted after success unless `keep_download`.
"""
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser
from http.client import HTTPException
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import torch

from .. import settings
from . import SOURCES, TARGETS, ConversionError, Target, _load_sources, _target, convert

__all__ = ['FetchError', 'SourceFile', 'fetch', 'resolve_target', 'source_files', 'default_target', 'local_weights',
           'fetch_command', 'manual_route', 'download_file', 'SAT_GDRIVE_IDS']

PathLike = Union[str, Path]
WEIGHTS_NAME = 'model.safetensors'
DRIVE_VIEW = 'https://drive.google.com/uc?id={}'  # the URL form of the authors' scripts
_USER_AGENT = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36'
_CHUNK = 1 << 20
_TIMEOUT = 60
_ATTEMPTS = 4
_REQUIRED_MODULES = {'robust-zoo[convert-tf]': 'tensorflow'}

# (<name>.index, <name>.data-00000-of-00001) Google Drive ids of SAT's download scripts (commit d1ad301)
SAT_GDRIVE_IDS: Dict[str, Tuple[str, str]] = {
    'Res50-relu': ('1cohW6FAE7dTaC7RARiqP3fVbiE5AVX4f', '1f03RpPMF6_OyVnL7F8RnbkPT4uitnucX'),
    'Res50-silu': ('1VvnMZyrntlLfWnQAdY9wfuCAGJ4fMU3x', '1y3yAKrXgyGF7pnXoZg7R6Ge6N3LsXa_B'),
    'Res50-smoothrelu': ('18FizqadONHUAgysO8EoNyxFAzxpjJq_V', '1mtm-QspciqS-_AXHNGgy-sqwtAAgtiw_'),
    'Res50-gelu': ('1WXZNTAZwZ_JsgXN6mNwm3CMwyFTfknkb', '1bNkq7B_oq6AWoUQb74GlERRPTX8wQuFY'),
    'Res50-elu': ('11PCXlx7XNs7bkg2LH6RiCysJf5J2sgRq', '1eymHm21mkxm5aL24Uca8aFqj6FPLqBcw'),
    'Res50-softplus': ('1HnBSIWV4w8o2cD8fwb-WbHQZ5nxz7YSS', '16SLoDVJWK5w_69f8PoOHrxZZNakKaCXW'),
    'efficientnet-b0': ('1ZTFo5RHQYy9zCKghFrQyACFQOsg4srr4', '1NVEtGO0l15r2Dc5FBzOKlWr2lqJ11WQD'),
    'efficientnet-b1': ('1Z5oKE9oYLMcl16uK_FOWjY_sbeFhljRp', '12EWVkLi0_4Ep6Du933MV1vCwIKAActzT'),
    'efficientnet-b2': ('1-_GlLOlIhwnhu1lnT1rv9aleTR1VmXAs', '1QkDEm6OSgeeRwYd9suXtQbu-3yC9ebmu'),
    'efficientnet-b3': ('1BeyzyFYA43CwGvlXyNNG-2EswH4DLQNt', '1zlCLPKaX4i9_ikuJzusY4aV9kTGzXLqF'),
    'efficientnet-b4': ('1O5N_WD-ofuSG5n5OOiNiZRpcBIhh0Ykg', '17cMDXEqNjzXpPcvhSWAA7pDfTxGl3I9Q'),
    'efficientnet-b5': ('1QG81MOXKF1MpUYV9nTECfOimmGCQuiH2', '1EWF0H_26zj6_kvdxQD1mYjjLzW9K7qHz'),
    'efficientnet-b6': ('14y9VCC7mHSE6cX10hkof5-vFA2bkjd31', '1iA-XyCRmXzyvHr-IP21xvHxD2y4lesyK'),
    'efficientnet-b7': ('1SAZt2Ald7MVWsxz_Hpe7F1bTEZW7nQdF', '1koh9au89VJR6sB1b4ep2azbUmNiDmblj'),
    'efficientnet-bL1': ('1MZr3Vx1E7qICamwpV_CFs1i2BZ40O6oq', '1jGniWU77jQtjxjRqnd4GRoefCaJ9dnzr'),
    'efficientnet-bL1-enhanced': ('1CJvhOkKaEaPvNqe_ZZelsMzJpuitysAv', '1ceFsUZYWYh2usgVZV9uDnn9zc6NgWFty'),
}


class FetchError(RuntimeError):
    """A fetch that cannot finish: no network, a page instead of the file, a truncated file, a digest mismatch."""


@dataclass(frozen=True)
class SourceFile:
    """One file of a target's release: its name on disk, its Google Drive id, its sha256 where known."""
    name: str
    gdrive_id: str
    sha256: Optional[str] = None

    @property
    def url(self) -> str:
        return f'{settings.download_base_url()}/download?id={self.gdrive_id}&export=download&confirm=t'


# --- what a target needs ---------------------------------------------------------------------------------------

def resolve_target(name: str) -> Target:
    """The target of `name`: `<arch>.<tag>`, or an untagged `<arch>` meaning its default converted tag."""
    _load_sources()
    bare = name.split('/', 1)[1] if name.startswith('robust_zoo/') else name
    default = default_target(bare) if '.' not in bare else None
    return TARGETS[default] if default else _target(bare)


def source_files(target: Target) -> List[SourceFile]:
    """The files `fetch` downloads for `target`, in the order the converter is given them (first: the checkpoint)."""
    known = dict(target.extra.get('sha256') or {})
    if target.source.startswith('sat-'):
        stem = target.extra['source_name']
        ids = dict(zip((f'{stem}.index', f'{stem}.data-00000-of-00001'), SAT_GDRIVE_IDS[stem]))
    elif target.extra.get('gdrive_id'):
        ids = {f'{target.extra["robustbench_id"]}.pt': target.extra['gdrive_id']}
    else:
        raise FetchError(f'{target.name}: no download is known for source {target.source}; '
                         f'convert a file yourself: robust-zoo convert {target.source} FILE --model {target.name}.')
    return [SourceFile(n, i, known.get(n)) for n, i in ids.items()]


def default_target(arch: str) -> Optional[str]:
    """The converted tag an untagged name means: the target marked `default` in its extra, else the first registered
    (e.g. resnet50_silu_at -> resnet50_silu_at.sat_in1k); None when `arch` has no conversion target."""
    _load_sources()
    tagged = [t for t in TARGETS.values() if t.name.split('.', 1)[0] == arch]
    marked = [t for t in tagged if t.extra.get('default')]
    chosen = marked or tagged
    return chosen[0].name if chosen else None


def local_weights(name: str) -> Optional[Path]:
    """The converted weights of target `name` on this machine: fetched (settings.fetched_dir()) first, then a
    card folder that `robust-zoo convert --card` wrote (settings.cards_dir()); None when neither has them."""
    from ..models._pretrained import cards_dir  # the one in use (settings', unless register_published moved it)
    for root in (settings.fetched_dir(), cards_dir()):
        path = root / name / WEIGHTS_NAME
        if path.is_file():
            return path
    return None


def fetch_command(name: str) -> str:
    return f'robust-zoo fetch {name}'


def manual_route(target: Target) -> str:
    """How to do a fetch by hand: the files' source URLs, then `fetch --from` (or `convert --card`)."""
    files = source_files(target)
    urls = '; '.join(f'{f.name} from {DRIVE_VIEW.format(f.gdrive_id)}' for f in files)
    return (f'To fetch by hand: download {urls} (a browser, or `gdown ID`) into one folder, then run '
            f'`robust-zoo fetch {target.name} --from FOLDER` (or `robust-zoo convert {target.source} '
            f'FOLDER/{files[0].name} --model {target.name} --card`).')


# --- downloading -----------------------------------------------------------------------------------------------

class _Page(HTMLParser):
    """A web page's title, forms (action, hidden fields) and links that carry a `confirm=` token."""

    def __init__(self) -> None:
        super().__init__()
        self.title, self.forms, self.links, self._in_title = '', [], [], False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == 'form':
            self.forms.append((a.get('action') or '', {}))
        elif tag == 'input' and self.forms and a.get('type') == 'hidden' and a.get('name'):
            self.forms[-1][1][a['name']] = a.get('value') or ''
        elif tag == 'a' and 'confirm=' in (a.get('href') or ''):
            self.links.append(a['href'])
        self._in_title = tag == 'title'

    def handle_endtag(self, tag):
        self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data


def _confirm_url(page: _Page, url: str, cookies: CookieJar) -> Optional[str]:
    """The URL Google Drive's "download anyway" page leads to: its form with an `id` field, a `confirm=` link, or
    (the older protocol) the `download_warning` cookie's token."""
    for action, fields in page.forms:
        if 'id' in fields:
            return urllib.parse.urljoin(url, action) + '?' + urllib.parse.urlencode(fields)
    if page.links:
        return urllib.parse.urljoin(url, page.links[0])
    for cookie in cookies:
        if cookie.name.startswith('download_warning'):
            return f'{url}&confirm={cookie.value}'
    return None


def _is_page(first: bytes, content_type: str) -> bool:
    """An HTML page where a file was expected. Checked on the markup's first words, not a bare '<': a tensor's
    bytes may start with 0x3c."""
    head = first.lstrip()[:16].lower()
    return content_type == 'text/html' or head.startswith((b'<!doctype html', b'<html', b'<head', b'<!--'))


def _total(resp, offset: int) -> Optional[int]:
    """The full file's length from Content-Range (206) or Content-Length, None when the server does not say."""
    if resp.status == 206:
        total = (resp.headers.get('Content-Range') or '').rpartition('/')[2]
        return int(total) if total.isdigit() else None
    length = resp.headers.get('Content-Length')
    return int(length) if length and length.isdigit() else None


def download_file(url: str, dest: PathLike, *, manual: str = '', progress: bool = True,
                  attempts: int = _ATTEMPTS) -> Path:
    """Download `url` to `dest` through `dest.part`: resumed with Range after a dropped connection (restarted
    when the server ignores Range), renamed only when complete; pages and short files are FetchErrors."""
    from huggingface_hub.utils import tqdm
    dest = Path(dest)
    part = dest.with_name(dest.name + '.part')
    dest.parent.mkdir(parents=True, exist_ok=True)
    cookies = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(cookies))
    hops, got, total = 0, 0, None
    for _ in range(attempts):
        offset = part.stat().st_size if part.exists() else 0
        headers = {'User-Agent': _USER_AGENT, **({'Range': f'bytes={offset}-'} if offset else {})}
        try:
            resp = opener.open(urllib.request.Request(url, headers=headers), timeout=_TIMEOUT)
        except urllib.error.HTTPError as e:
            if e.code == 416 and offset:  # our partial file is not a prefix the server knows: start again
                part.unlink()
                continue
            raise FetchError(f'{url} answered HTTP {e.code} ({e.reason}); nothing was saved. {manual}') from e
        except (urllib.error.URLError, OSError, HTTPException) as e:
            reason = getattr(e, 'reason', None) or e
            raise FetchError(f'cannot reach {url} ({reason}): no network, or the server is down. {manual}') from e
        with resp:
            try:
                first = resp.read(_CHUNK)
            except (OSError, HTTPException):  # dropped before the first bytes: try again
                continue
            if _is_page(first, resp.headers.get_content_type()):
                page = _Page()
                try:
                    page.feed((first + resp.read(2 * _CHUNK)).decode('utf-8', 'replace'))
                except (OSError, HTTPException):
                    page.feed(first.decode('utf-8', 'replace'))
                follow = _confirm_url(page, resp.geturl(), cookies)
                if follow and hops < 2:
                    url, hops = follow, hops + 1
                    continue
                title = ' '.join(page.title.split()) or 'no title'
                raise FetchError(f'{url} answered with a web page ("{title}"), not the file: Google Drive shows one '
                                 f'when a file is over its download quota, no longer shared, or moved. Nothing was '
                                 f'saved; try again later. {manual}')
            if offset and (resp.status != 206 or not (resp.headers.get('Content-Range') or '').startswith(
                    f'bytes {offset}-')):
                offset = 0  # the server sent the whole file: restart
            total = _total(resp, offset)
            with open(part, 'ab' if offset else 'wb') as f, tqdm(
                    total=total, initial=offset, unit='B', unit_scale=True, unit_divisor=1024,
                    desc=dest.name, disable=not progress) as bar:
                chunk = first
                try:
                    while chunk:
                        f.write(chunk)
                        bar.update(len(chunk))
                        chunk = resp.read(_CHUNK)
                except (OSError, HTTPException):  # reset or timed out mid-file: resume on the next attempt
                    pass
        got = part.stat().st_size
        if total is None or got == total:
            os.replace(part, dest)
            return dest
        if got > total:
            part.unlink()
            raise FetchError(f'{url}: received {got} bytes, more than the {total} the server announced; the '
                             f'partial file was deleted. {manual}')
    raise FetchError(f'{url}: the connection dropped {attempts} times (last at {got} of {total} bytes). The partial '
                     f'file {part} is kept: run the same command again to resume it. {manual}')


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(_CHUNK), b''):
            digest.update(block)
    return digest.hexdigest()


# --- fetching --------------------------------------------------------------------------------------------------

def _recorded(folder: Path) -> Dict[str, str]:
    """sha256 of the source files that the last successful fetch into `folder` recorded."""
    try:
        files = json.loads((folder / 'conversion.json').read_text()).get('source_files') or {}
        return {n: r['sha256'] for n, r in files.items() if isinstance(r, dict) and r.get('sha256')}
    except (OSError, ValueError, AttributeError):
        return {}


def _require(target: Target) -> None:
    """The optional extra a source needs, asked for by name before anything is downloaded."""
    module = _REQUIRED_MODULES.get(SOURCES[target.source].requires)
    if module is None:
        return
    try:
        missing = importlib.util.find_spec(module) is None
    except ValueError:  # in sys.modules without a spec (None: an import that was blocked)
        missing = True
    if missing:
        raise FetchError(f'{target.name} is converted from {target.source} checkpoints, which need {module}: '
                         f'pip install "{SOURCES[target.source].requires}" (nothing was downloaded).')


def _local_sources(folder: PathLike, files: List[SourceFile]) -> List[Path]:
    folder = Path(folder)
    if folder.is_file() and len(files) == 1:
        return [folder]
    paths = [folder / f.name for f in files]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FetchError(f'{folder}: {", ".join(missing)} not found; --from needs the folder holding '
                         f'{", ".join(f.name for f in files)}.')
    return paths


def _verify(folder: Path, model: torch.nn.Module, name: str) -> None:
    """The written weights equal the converted ones, and reload through timm to the same finite logits."""
    import timm
    from safetensors.torch import load_file
    saved, state = load_file(str(folder / WEIGHTS_NAME)), model.state_dict()
    differ = sorted(set(saved) ^ set(state)) + [k for k in state if k in saved and not torch.equal(saved[k], state[k])]
    if differ:
        raise FetchError(f'{name}: the written {WEIGHTS_NAME} differs from the converted model at {differ[:4]}.')
    reloaded = timm.create_model(f'robust_zoo/{name}', pretrained=True,
                                 pretrained_cfg_overlay=dict(file=str(folder / WEIGHTS_NAME))).eval()
    x = torch.rand(1, *model.pretrained_cfg['input_size'], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = model(x), reloaded(x)
    if not (torch.isfinite(want).all() and torch.equal(want, got)):
        raise FetchError(f'{name}: the converted model gives non-finite logits, or its saved copy other logits; '
                         f'nothing was stored.')


def _record(folder: Path, target: Target, files: List[SourceFile], digests: Dict[str, str], how: str) -> None:
    """The source files' digests in conversion.json and the card (written into the unpublished temp folder)."""
    info = json.loads((folder / 'conversion.json').read_text())
    info['source_files'] = {f.name: dict(sha256=digests[f.name], url=DRIVE_VIEW.format(f.gdrive_id)) for f in files}
    info['fetched'] = how
    (folder / 'conversion.json').write_text(json.dumps(info, indent=2) + '\n')
    rows = '\n'.join(f'| `{f.name}` | {DRIVE_VIEW.format(f.gdrive_id)} | `{digests[f.name]}` |' for f in files)
    with open(folder / 'README.md', 'a') as f:
        f.write(f'\n## Fetched\n\n`{fetch_command(target.name)}` ({how}) converted these files of the source:\n\n'
                f'| file | source | sha256 |\n|---|---|---|\n{rows}\n')


def _store(tmp: Path, dest: Path) -> None:
    """Put the finished folder `tmp` at `dest` by renames: readers see the old folder or the new one, never half."""
    old = None
    if dest.exists():
        old = dest.with_name(f'.{dest.name}.old-{os.getpid()}')
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def fetch(name: str, *, force: bool = False, source_dir: Optional[PathLike] = None, keep_download: bool = False,
          progress: bool = True) -> Path:
    """Download, convert, verify and store target `name` (`<arch>.<tag>`, or `<arch>` for its default tag);
    returns its folder in `settings.fetched_dir()`. Already there: returned as is, unless `force`. `source_dir`:
    a folder (or the one file) you downloaded yourself instead of downloading."""
    from huggingface_hub.utils import tqdm

    from ..publish.converted_card import write_converted_card
    target = resolve_target(name)
    dest = settings.fetched_dir() / target.name
    if (dest / WEIGHTS_NAME).is_file() and not force:
        return dest
    _require(target)
    files = source_files(target)
    manual = manual_route(target)
    known = {**_recorded(dest), **{f.name: f.sha256 for f in files if f.sha256}}
    downloads = settings.cache_dir() / 'downloads' / target.name
    if source_dir is not None:
        paths = _local_sources(source_dir, files)
    else:
        paths = [downloads / f.name if (downloads / f.name).is_file() else
                 download_file(f.url, downloads / f.name, manual=manual, progress=progress) for f in files]
    digests = {f.name: _sha256(p) for f, p in zip(files, paths)}
    wrong = [f'{n}: {digests[n]}, expected {known[n]}' for n in digests if known.get(n) and known[n] != digests[n]]
    if wrong:
        if source_dir is None:
            shutil.rmtree(downloads, ignore_errors=True)
        raise FetchError(f'{target.name}: sha256 mismatch ({"; ".join(wrong)}): not the file a previous fetch or '
                         f'robust_zoo recorded' + ('; the download was deleted.' if source_dir is None else '.')
                         + f' {manual}')
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{target.name}.', dir=dest.parent))
    try:
        with tqdm(total=3, desc=f'converting {target.name}', unit='step', disable=not progress) as bar:
            try:
                model = convert(target.source, paths[0], target.name)
            except ConversionError as e:
                if source_dir is None:
                    shutil.rmtree(downloads, ignore_errors=True)
                raise FetchError(f'{target.name}: the downloaded files do not convert: {e}' + (
                    ' They were deleted; run the fetch again to download them anew.' if source_dir is None else '')
                    + f' {manual}') from e
            bar.update()
            folder = write_converted_card(model, target, checkpoint=paths[0], out_root=tmp)
            _record(folder, target, files, digests, 'from ' + ('a local folder' if source_dir else 'Google Drive'))
            bar.update()
            _verify(folder, model, target.name)
            bar.update()
        _store(folder, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if source_dir is None and not keep_download:
        shutil.rmtree(downloads, ignore_errors=True)
    return dest
