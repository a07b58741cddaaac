"""The CLI skeleton: command registry, config file + flag overrides, data loading, --json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from modelfleet_toolkit import cli
from modelfleet_toolkit.config import ConfigError, TrainConfig, load_yaml, resolve
from modelfleet_toolkit.data import DataError, clean_text, fingerprint, load_examples
from tests.toolkit.conftest import ROOT, heldout, write_csv


def test_flags_override_the_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "train.yaml"
    cfg.write_text("data: a.csv\nlearning_rate: 0.001\nbatch_size: 4\nclean: true\n")
    parser = cli.build_parser()
    args = parser.parse_args(
        ["train", "-c", str(cfg), "--batch-size", "8", "--no-clean", "--schedule", "one_cycle"]
    )
    resolved = resolve(TrainConfig, load_yaml(args.config), args)
    assert resolved.data == "a.csv"
    assert resolved.learning_rate == 0.001  # from the file
    assert resolved.batch_size == 8  # the flag wins
    assert resolved.clean is False
    assert resolved.schedule == "one_cycle"
    assert resolved.epochs == TrainConfig().epochs  # untouched default


def test_unknown_config_key_is_a_usage_error(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("data: a.csv\nlearnin_rate: 0.1\n")
    with pytest.raises(ConfigError, match="learnin_rate"):
        resolve(TrainConfig, load_yaml(cfg), cli.build_parser().parse_args(["train"]))
    assert cli.main(["train", "-c", str(cfg)]) == 2


def test_csv_jsonl_and_datasets_dir_load_alike_with_one_fingerprint(tmp_path: Path) -> None:
    import datasets

    from_csv = load_examples(heldout("sentiment"))
    rows = list(zip(from_csv.texts, from_csv.labels, strict=True))
    jsonl = tmp_path / "s.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    from_jsonl = load_examples(jsonl)
    write_csv(tmp_path / "s.csv", rows)
    ds_dir = tmp_path / "ds"
    datasets.Dataset.from_dict({"sentence": from_jsonl.texts, "y": from_jsonl.labels}).save_to_disk(
        str(ds_dir)
    )
    from_dir = load_examples(ds_dir, text_column="sentence", label_column="y")
    assert fingerprint(from_jsonl) == fingerprint(from_csv) == fingerprint(from_dir)
    changed = write_csv(tmp_path / "c.csv", [*rows[:-1], (rows[-1][0] + "!", rows[-1][1])])
    assert fingerprint(load_examples(changed)) != fingerprint(from_csv)
    with pytest.raises(DataError, match="no column 'body'"):
        load_examples(tmp_path / "s.csv", text_column="body")


def test_cleaning_folds_full_width_and_keeps_cjk() -> None:
    # Full-width comma, exclamation mark and "Hello", an ideographic full stop.
    raw = "  退款\uff0c请\uff01  \uff28\uff45\uff4c\uff4c\uff4f\t world\u3002 "
    assert clean_text(raw) == "退款,请! Hello world."


def test_data_command_prints_one_json_object(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelfleet_toolkit",
            "data",
            "--json",
            "--data",
            str(heldout("intent")),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    result = json.loads(out.stdout)
    assert result["rows"] == 120
    assert len(result["fingerprint"]) == 64
    assert sum(result["labels"].values()) == 120


def test_missing_model_or_data_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        cli.main(["evaluate", "--no-track", "--model", "m", "--data", str(tmp_path / "x.csv")]) == 2
    )
    assert "data not found" in capsys.readouterr().err
    data = write_csv(tmp_path / "d.csv", [("hi", "a"), ("yo", "b")])
    argv = ["evaluate", "--no-track", "--model", str(tmp_path / "nope"), "--data", str(data)]
    assert cli.main(argv) == 2
    assert "modelfleet evaluate:" in capsys.readouterr().err


def test_tune_storage_precedence_is_flag_then_env_then_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shared storage's URL holds a password: the env var keeps it out of argv."""
    from modelfleet_toolkit.commands.tune import STORAGE_ENV, resolve_tune

    cfg = tmp_path / "tune.yaml"
    cfg.write_text("train: {data: a.csv}\nstorage: sqlite:///file.db\n")
    parser = cli.build_parser()
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    assert resolve_tune(parser.parse_args(["tune", "-c", str(cfg)])).storage == "sqlite:///file.db"
    monkeypatch.setenv(STORAGE_ENV, "redis://:pw@redis:6379/1")
    args = parser.parse_args(["tune", "-c", str(cfg)])
    assert resolve_tune(args).storage == "redis://:pw@redis:6379/1"
    args = parser.parse_args(["tune", "-c", str(cfg), "--storage", "sqlite:///flag.db"])
    assert resolve_tune(args).storage == "sqlite:///flag.db"


def test_exponent_floats_without_a_dot_are_floats(tmp_path: Path) -> None:
    """`learning_rate: 1e-5` (and Helm's toYaml of 0.00001, "1e-05") is YAML 1.2's float;
    PyYAML's YAML 1.1 would hand the string "1e-05" to a grid of values."""
    cfg = tmp_path / "t.yaml"
    cfg.write_text("learning_rate: 1e-05\ngrid: [1e-5, 2.0e-5, 3]\nquoted: '1e-5'\nsteps: 1_000\n")
    assert load_yaml(cfg) == {
        "learning_rate": 1e-5,
        "grid": [1e-5, 2e-5, 3],
        "quoted": "1e-5",
        "steps": 1000,
    }
