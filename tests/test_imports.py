"""The package's import graph has no cycles, and `import robust_zoo` stays a library import: no publishing code,
no matplotlib, no huggingface_hub card code."""
import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

import pytest

import robust_zoo

PACKAGE = Path(robust_zoo.__file__).resolve().parent


def _modules() -> Dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob('*.py')):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix('').parts)
        if parts[-1] == '__init__':
            parts = parts[:-1]
        out['.'.join(parts)] = path
    return out


def _resolve(module: str, is_package: bool, level: int, name: str) -> str:
    """The absolute name of `from <level dots><name> import ...` written in `module`."""
    base = module.split('.') if is_package else module.split('.')[:-1]
    base = base[:len(base) - (level - 1)] if level > 1 else base
    return '.'.join(base + ([name] if name else []))


def import_graph() -> Dict[str, Set[str]]:
    """module -> the robust_zoo modules it imports at module level (function bodies excluded: they run later).
    `from pkg import sub` counts as an edge to the submodule `pkg.sub` when that is a module, else to `pkg`."""
    modules = _modules()
    graph: Dict[str, Set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        is_package = path.name == '__init__.py'
        for node in ast.parse(path.read_text()).body:  # module level only
            if isinstance(node, ast.If):  # e.g. `if TYPE_CHECKING:` stays out; other module-level ifs count
                if isinstance(node.test, ast.Name) and node.test.id == 'TYPE_CHECKING':
                    continue
                nodes = node.body + node.orelse
            elif isinstance(node, ast.Try):
                nodes = node.body + [n for h in node.handlers for n in h.body] + node.orelse
            else:
                nodes = [node]
            for n in nodes:
                targets: List[str] = []
                if isinstance(n, ast.Import):
                    targets = [a.name for a in n.names]
                elif isinstance(n, ast.ImportFrom):
                    base = _resolve(module, is_package, n.level, n.module or '') if n.level else n.module or ''
                    targets = [f'{base}.{a.name}' if f'{base}.{a.name}' in modules else base for a in n.names]
                for target in targets:
                    while target and target not in modules and '.' in target:
                        target = target.rsplit('.', 1)[0]
                    if target in modules and target != module:
                        graph[module].add(target)
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One import cycle as [a, b, ..., a], or [] when there is none."""
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert not cycle, 'import cycle: ' + ' -> '.join(cycle)


def test_the_cycle_finder_sees_a_cycle_and_relative_imports(tmp_path):
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b'}, 'b': set()}) == []
    graph = import_graph()
    assert 'robust_zoo._io' in graph['robust_zoo.training.checkpoint']  # `from .._io import ...`
    assert 'robust_zoo.models._hub' in graph['robust_zoo.models._builder']  # `from ._hub import ...`


def test_io_is_a_leaf():
    assert import_graph()['robust_zoo._io'] == set()


def _imported_by_import_robust_zoo() -> List[str]:
    """The modules `python -X importtime -c "import robust_zoo"` reports, in a fresh interpreter."""
    proc = subprocess.run([sys.executable, '-X', 'importtime', '-c', 'import robust_zoo'], capture_output=True,
                          text=True, cwd=PACKAGE.parent, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [line.rsplit('|', 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith('import time:')
            and '|' in line]


def test_import_robust_zoo_imports_no_publishing_plotting_or_card_code():
    modules = _imported_by_import_robust_zoo()
    assert 'robust_zoo.models._hub' in modules, 'the importtime listing was not parsed'
    unwanted = [m for m in modules if m == 'matplotlib' or m.startswith('matplotlib.')
                or m == 'huggingface_hub.repocard' or m == 'robust_zoo.publish' or m.startswith('robust_zoo.publish.')
                or m == 'robust_zoo.hub']
    assert not unwanted, f'`import robust_zoo` imports {unwanted}'


def _modules_after(code: str) -> Set[str]:
    proc = subprocess.run([sys.executable, '-c', f'{code}; import sys; print("\\n".join(sys.modules))'],
                          capture_output=True, text=True, cwd=PACKAGE.parent, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return set(proc.stdout.split())


def test_import_robust_zoo_adds_no_huggingface_hub_module_to_what_import_timm_loads():
    # timm.models._hub imports huggingface_hub.HfApi at import, and huggingface_hub.hf_api imports
    # huggingface_hub.repocard_data (the card metadata classes) at module level: `import timm` alone loads it.
    # What robust_zoo controls is that it adds no huggingface_hub module of its own (no repocard, no card code).
    timm_hf = {m for m in _modules_after('import timm') if m.split('.')[0] == 'huggingface_hub'}
    ours_hf = {m for m in _modules_after('import robust_zoo') if m.split('.')[0] == 'huggingface_hub'}
    assert 'huggingface_hub.hf_api' in timm_hf, 'the listing was not parsed'
    assert ours_hf - timm_hf == set(), f'`import robust_zoo` adds {sorted(ours_hf - timm_hf)} to `import timm`'


def test_the_old_hub_module_still_works_and_says_where_things_went():
    code = ('import warnings; warnings.simplefilter("error", DeprecationWarning)\n'
            'try:\n    import robust_zoo.hub\nexcept DeprecationWarning as e:\n    print(e)')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=PACKAGE.parent,
                          timeout=300)
    assert 'robust_zoo.publish' in proc.stdout and 'robust_zoo.models' in proc.stdout, proc.stderr[-2000:]
    with pytest.warns(DeprecationWarning):
        sys.modules.pop('robust_zoo.hub', None)
        import robust_zoo.hub as hub
    from robust_zoo.models import _pretrained
    from robust_zoo.publish import write_card_repo
    assert hub.write_card_repo is write_card_repo and hub._state is _pretrained._state


def test_the_old_leaderboard_module_still_works():
    with pytest.warns(DeprecationWarning, match='robust_zoo.publish.leaderboard'):
        sys.modules.pop('robust_zoo.leaderboard', None)
        import robust_zoo.leaderboard as old
    from robust_zoo.publish import leaderboard
    assert old.write_leaderboard is leaderboard.write_leaderboard
    assert old.leaderboard_markdown is leaderboard.leaderboard_markdown


def test_the_old_sparta_bank_module_name_still_works_and_says_where_it_went():
    """Published cards say `robust_zoo.sparta.load_bank(...)`: the banks' module is now robust_zoo.sparta_bank,
    apart from the activation robust_zoo.layers.sparta, and the old name forwards with a warning."""
    with pytest.warns(DeprecationWarning, match='robust_zoo.sparta_bank'):
        sys.modules.pop('robust_zoo.sparta', None)
        import robust_zoo.sparta as old
    from robust_zoo import sparta_bank
    assert old.load_bank is sparta_bank.load_bank and set(old.__all__) == set(sparta_bank.__all__)
