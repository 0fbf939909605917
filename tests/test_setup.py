"""The set-up the README promises: `make test` / `make demo` install everything, CI runs the README's command,
and a disk too small for the install is refused up front with the numbers (not half-way through pip)."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / 'README.md').read_text()
    test_command = re.search(r'^(make \w+)\s+# sets up the same, runs the whole test suite', readme, re.M).group(1)
    ci = [line.strip() for line in (ROOT / '.ci' / 'run').read_text().splitlines()
          if line.strip() and not line.startswith('#')]
    assert test_command in ci


def _make(tmp_path, *args):
    shutil.copy(ROOT / 'Makefile', tmp_path)
    shutil.copy(ROOT / 'pyproject.toml', tmp_path)
    return subprocess.run(['make', '--no-print-directory', *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)


needs_make = pytest.mark.skipif(shutil.which('make') is None, reason='needs make')


@needs_make
def test_setup_refuses_a_disk_too_small_before_installing(tmp_path):
    proc = _make(tmp_path, 'NEED_GB=1000000', '.venv/.installed')
    assert proc.returncode != 0
    assert 'needs about 1000000 GB free' in proc.stderr and 'Free some space' in proc.stderr
    assert not (tmp_path / '.venv').exists()


@needs_make
def test_the_disk_check_passes_where_there_is_room_and_comes_before_the_install(tmp_path):
    assert _make(tmp_path, 'NEED_GB=0', 'check-disk').returncode == 0
    plan = _make(tmp_path, '-n', '.venv/.installed').stdout
    assert plan.index('check-disk') < plan.index('python3 -m venv .venv')
