"""The docs stay whole: a short README, links that lead somewhere, a nav that lists every page, a CLI reference
(and every other page) that names only real subcommands, and generated tables on the results page, not in the
README."""
import re
import shutil
from pathlib import Path

import pytest
import yaml

from robust_zoo.publish import leaderboard as lb
from robust_zoo.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / 'docs'
PAGES = sorted(DOCS.glob('*.md'))
MARKERS = [(lb.PUBLISHED_START, lb.PUBLISHED_END), (lb.LEADERBOARD_START, lb.LEADERBOARD_END),
           (lb.TRANSFER_START, lb.TRANSFER_END), (lb.REPRODUCTIONS_START, lb.REPRODUCTIONS_END)]
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


def test_generated_tables_live_on_the_results_page_not_in_the_readme():
    readme, results = (ROOT / 'README.md').read_text(), (DOCS / 'results.md').read_text()
    for start, end in MARKERS:
        assert start not in readme and end not in readme
        assert results.count(start) == 1 and results.count(end) == 1
    assert lb.results_page() == DOCS / 'results.md'


def test_leaderboard_writes_the_results_page_by_default(tmp_path, monkeypatch, capsys):
    page = tmp_path / 'results.md'
    page.write_text(f'# Results\n{lb.LEADERBOARD_START}\nold\n{lb.LEADERBOARD_END}\n')
    monkeypatch.setattr(lb, 'results_page', lambda: page)
    cards = tmp_path / 'cards'
    shutil.copytree(ROOT / 'model_cards' / 'resnet20_relu_at.fmnist_s0', cards / 'resnet20_relu_at.fmnist_s0')
    assert main(['leaderboard', '--cards', str(cards), '--print']) == 0
    assert 'resnet20_relu_at' in capsys.readouterr().out and 'old' in page.read_text()
    assert main(['leaderboard', '--cards', str(cards)]) == 0
    assert 'old' not in page.read_text() and 'resnet20_relu_at' in page.read_text()
    assert (tmp_path / 'assets' / 'leaderboard.png').is_file()
