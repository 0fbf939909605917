"""The docs stay whole: a short README, links that lead somewhere, a nav that lists every page, a CLI reference
(and every other page) that names only real subcommands, and generated tables on the results and claims pages,
not in the README."""
import re
import shutil
from pathlib import Path

import pytest
import yaml

from experiments import study
from robust_zoo.publish import leaderboard as lb
from robust_zoo.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / 'docs'
PAGES = sorted(DOCS.glob('*.md'))
MARKERS = {'results.md': [(lb.PUBLISHED_START, lb.PUBLISHED_END), (lb.LEADERBOARD_START, lb.LEADERBOARD_END),
                          (lb.REPRODUCTIONS_START, lb.REPRODUCTIONS_END)],
           'claims.md': [(study.CLAIMS_START, study.CLAIMS_END), (study.CONVERGENCE_START, study.CONVERGENCE_END),
                         (study.TRANSFER_START, study.TRANSFER_END)]}
LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)')


def _relative_links(page: Path):
    text = re.sub(r'```.*?```', '', page.read_text(), flags=re.S)  # code blocks hold examples, not links
    for target in LINK.findall(text):
        if re.match(r'[a-z][a-z0-9+.-]*:', target) or target.startswith('#'):  # https:, mailto:, same-page anchors
            continue
        yield target.split('#', 1)[0]


def _nav_files(nav):
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        if isinstance(value, list):
            yield from _nav_files(value)
        else:
            yield value


def test_readme_is_at_most_250_lines():
    assert len((ROOT / 'README.md').read_text().splitlines()) <= 250


@pytest.mark.parametrize('page', [ROOT / 'README.md', *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_an_existing_file(page):
    missing = [t for t in _relative_links(page) if not (page.parent / t).exists()]
    assert not missing, f'{page.relative_to(ROOT)} links to files that do not exist: {missing}'


def test_the_link_check_sees_links_and_skips_urls_anchors_and_code(tmp_path):
    page = tmp_path / 'p.md'
    page.write_text('[a](a.md) ![img](assets/x.png "t") [b](b.md#part) [web](https://x.org) [here](#top)\n'
                    '```\n[not](in-code.md)\n```\n')
    assert list(_relative_links(page)) == ['a.md', 'assets/x.png', 'b.md']


def test_the_nav_lists_every_page_and_only_pages_that_exist():
    config = yaml.safe_load((ROOT / 'mkdocs.yml').read_text())
    nav = list(_nav_files(config['nav']))
    assert sorted(nav) == sorted(p.name for p in PAGES)


def _subcommands_named(page: Path):
    return set(re.findall(r'robust-zoo ([a-z][a-z-]*)', page.read_text()))


def test_every_subcommand_in_the_cli_reference_exists(capsys):
    named = _subcommands_named(DOCS / 'cli.md')
    assert {'list', 'demo', 'eval', 'card', 'push', 'unpublish', 'leaderboard', 'convert'} <= named
    for sub in sorted(named | set().union(*map(_subcommands_named, [ROOT / 'README.md', *PAGES]))):
        with pytest.raises(SystemExit) as e:
            main([sub, '--help'])
        assert e.value.code == 0, f'the docs name `robust-zoo {sub}`, which the CLI does not have'
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:  # and the check would notice a subcommand that does not exist
        main(['no-such-subcommand', '--help'])
    assert e.value.code != 0


def test_generated_tables_live_on_the_results_and_claims_pages_not_in_the_readme():
    readme = (ROOT / 'README.md').read_text()
    for name, markers in MARKERS.items():
        page = (DOCS / name).read_text()
        for start, end in markers:
            assert start not in readme and end not in readme
            assert page.count(start) == 1 and page.count(end) == 1
    assert study.PAGE == DOCS / 'claims.md'


def test_leaderboard_writes_the_results_page_of_the_current_directory_by_default(tmp_path, monkeypatch, capsys):
    """As in a checkout: docs/results.md of the current directory; without one the table is printed."""
    page = tmp_path / 'docs' / 'results.md'
    page.parent.mkdir()
    page.write_text(f'# Results\n{lb.LEADERBOARD_START}\nold\n{lb.LEADERBOARD_END}\n')
    monkeypatch.chdir(tmp_path)
    cards = tmp_path / 'cards'
    shutil.copytree(ROOT / 'model_cards' / 'resnet20_relu_at.fmnist_s0', cards / 'resnet20_relu_at.fmnist_s0')
    assert main(['leaderboard', '--cards', str(cards), '--print']) == 0
    assert 'resnet20_relu_at' in capsys.readouterr().out and 'old' in page.read_text()
    assert main(['leaderboard', '--cards', str(cards)]) == 0
    assert 'old' not in page.read_text() and 'resnet20_relu_at' in page.read_text()
    assert (tmp_path / 'docs' / 'assets' / 'leaderboard.png').is_file()
    monkeypatch.chdir(cards)  # no docs/results.md here: the table goes to stdout, no page is written
    capsys.readouterr()
    assert main(['leaderboard', '--cards', str(cards)]) == 0
    assert capsys.readouterr().out.startswith('| architecture |') and not (cards / 'docs').exists()


def test_the_readmes_flagship_is_the_main_jobs_model_with_its_cards_numbers():
    """The README leads with the model `make demo` evaluates, loaded by its architecture's name (the default
    tag), and every number in its table is one the card's records state."""
    import json

    from timm.models import get_pretrained_cfg

    from robust_zoo.demo import FLAGSHIP, default_published_model
    from robust_zoo.publish.records import record_protocols
    name = default_published_model()
    assert name.split('.')[0] == FLAGSHIP and f'{FLAGSHIP}.{get_pretrained_cfg(FLAGSHIP).tag}' == name
    readme = (ROOT / 'README.md').read_text()
    section = readme.split('## The best published model', 1)[1].split('\n## ', 1)[0]
    assert f'robust_zoo/{FLAGSHIP}' in section and name.split('.')[1] in section
    records = json.loads((ROOT / 'model_cards' / name / 'eval_results.json').read_text())
    stated = {f"{100 * p['value']:.1f} [{100 * p['ci'][0]:.1f}, {100 * p['ci'][1]:.1f}]"
              for r in records for p in record_protocols(r)}
    cells = re.findall(r'\d+\.\d \[\d+\.\d, \d+\.\d\]', section)
    assert cells and set(cells) <= stated, f'README numbers not on the card: {set(cells) - stated}'
