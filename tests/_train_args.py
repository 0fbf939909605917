"""args.yaml as train/train_at.py writes it (train/train_args.py: its parser, its filter), for tests that build a run
folder by hand."""
import importlib.util
from pathlib import Path
from typing import Any, Dict, Sequence

import yaml

ROOT = Path(__file__).resolve().parents[1]


def train_args(argv: Sequence[str]) -> Dict[str, Any]:
    """The flags train_at.py would record for the command line `argv`."""
    spec = importlib.util.spec_from_file_location('train_args_for_tests', ROOT / 'train' / 'train_args.py')
    train_args_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_args_module)
    args = train_args_module.parse_args(list(argv))
    flags = {a.dest for a in train_args_module.parser._actions} - {'help'}
    return {k: v for k, v in vars(args).items() if k in flags}


def train_args_yaml(argv: Sequence[str]) -> str:
    """`train_args` as the text of args.yaml."""
    return yaml.safe_dump(train_args(argv), sort_keys=False)
