"""Options are consistent across commands: --no-progress everywhere, every default shown in --help (never
"default: None"), and data-folder errors worded with the CLI's own flags."""
import argparse

import pytest

from minicompress import cli, data

# the commands that train or evaluate (labs converts and grades notebooks, export / import convert one file:
# no progress bar to turn off)
NO_PROGRESS_BAR = {"labs", "export", "import_model"}
TRAINING_COMMANDS = [name for name in cli.COMMANDS if name not in NO_PROGRESS_BAR]
ALL_COMMANDS = [cli.COMMAND_NAMES.get(name, name) for name in cli.COMMANDS]
REQUIRED = {"evaluate": ["m.npz"], "prune": ["m.npz"], "quantize": ["m.npz"], "compress": ["m.npz"],
            "distill": ["--teacher", "t.npz"]}


def _subparsers():
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


@pytest.mark.parametrize("command", TRAINING_COMMANDS)
def test_every_command_accepts_no_progress(command):
    args = cli.build_parser().parse_args([command, *REQUIRED.get(command, []), "--no-progress"])
    assert args.no_progress is True


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_help_shows_every_default_and_never_none(command):
    sub = _subparsers()[command]
    text = sub.format_help()
    assert "default: None" not in text and "(default)" not in text
    for action in sub._actions:
        if action.option_strings and not isinstance(action, (argparse._HelpAction, argparse._StoreTrueAction)) \
                and not action.required:
            assert "default" in (action.help or ""), f"{command} {action.option_strings[0]}: no default in its help"


def test_empty_data_folder_is_named_with_the_flag(capsys, tmp_path):
    assert cli.main(["train", "--data-dir", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"--data-dir {tmp_path}: no mnist train files (train-images-idx3-ubyte[.gz]" in err
    assert "root=" not in err and err.count("\n") == 1


def test_dataset_without_data_folder_asks_for_the_flag(capsys, monkeypatch):
    monkeypatch.setattr(data, "shared_data_dir", lambda: None)
    assert cli.main(["train", "--dataset", "fashion-mnist", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--dataset fashion-mnist: only the MNIST subset ships with minicompress; pass --data-dir DIR" in err
    assert "root=" not in err and "load_fashion_mnist" not in err
