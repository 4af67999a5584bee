"""``aepo train --config FILE.yaml``: one run of the single-process engine."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

RESUME_LATEST = "latest"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="YAML with aepo: and trainer:")
    parser.add_argument("--output-dir", type=Path, help="overrides trainer.output_dir")
    parser.add_argument("--steps", type=int, help="overrides trainer.steps (total, not additional)")
    parser.add_argument("--device", help="overrides trainer.device")
    parser.add_argument(
        "--resume",
        nargs="?",
        const=RESUME_LATEST,
        metavar="CHECKPOINT",
        help="continue from the latest checkpoint in the output dir, or from CHECKPOINT",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from aepo.backends.local.run_file import RunFileError, read_run_file

    try:
        raw_file = read_run_file(args.config)
    except RunFileError as err:
        print(f"aepo train: {err}", file=sys.stderr)
        return 2
    # Validating the keys needs pydantic, not torch (aepo.core imports lazily): a bad key
    # comes back before the training stack is imported.
    from aepo.backends.local.settings import run_config_from_dict
    from aepo.core import ConfigError

    try:
        config = run_config_from_dict(raw_file, source=str(args.config))
        overrides = {}
        if args.output_dir is not None:
            overrides["output_dir"] = str(args.output_dir)
        if args.steps is not None:
            overrides["steps"] = args.steps
        if args.device is not None:
            overrides["device"] = args.device
        if args.no_progress:
            overrides["progress"] = False
        if overrides:
            raw = config.model_dump(mode="json")
            raw["trainer"].update(overrides)
            config = run_config_from_dict(
                raw, source=f"{args.config} (with command-line overrides)"
            )
    except ConfigError as err:
        print(f"aepo train: {err}", file=sys.stderr)
        return 2
    from aepo.backends.local.checkpoint import CheckpointError, latest_checkpoint
    from aepo.backends.local.trainer import LocalTrainer, ModelPathError

    try:
        resume_from = None
        if args.resume == RESUME_LATEST:
            resume_from = latest_checkpoint(config.trainer.output_dir)
        elif args.resume is not None:
            resume_from = Path(args.resume)
        if resume_from is not None:
            _check_resume_config(resume_from, config)
        else:
            _refuse_to_overwrite_a_run(Path(config.trainer.output_dir))
        trainer = LocalTrainer(config, resume_from=resume_from)
        if resume_from is not None:
            print(f"resumed from {resume_from} at step {trainer.step}")
            if trainer.step >= config.trainer.steps:
                print(
                    f"aepo train: the run is already at step {trainer.step} of "
                    f"{config.trainer.steps}; pass a larger --steps to continue it",
                    file=sys.stderr,
                )
                return 0
        trainer.fit()
    except (ConfigError, CheckpointError, ModelPathError, FileNotFoundError, ValueError) as err:
        print(f"aepo train: {err}", file=sys.stderr)
        return 1
    except FloatingPointError as err:  # a diverged step: the checkpoints before it are intact
        print(
            f"aepo train: the run diverged at {err}; checkpoints up to the last save are in "
            f"{config.trainer.output_dir}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print(
            f"aepo train: interrupted; --resume continues from the last checkpoint in "
            f"{config.trainer.output_dir}",
            file=sys.stderr,
        )
        return 130  # the shell's code for a run stopped by SIGINT
    print(f"done: {trainer.step} steps, logs and checkpoints in {trainer.output_dir}")
    return 0


def _refuse_to_overwrite_a_run(output_dir: Path) -> None:
    """A fresh run would truncate metrics.jsonl and replace the old run's checkpoints one
    by one, leaving a mix that a later --resume would continue: refuse instead."""
    from aepo.backends.local.checkpoint import CheckpointError, finished_checkpoints

    found = finished_checkpoints(output_dir)
    if found:
        raise CheckpointError(
            f"{output_dir} already holds a run (checkpoints up to {found[-1].name}): --resume "
            f"continues it; to start over, delete {found[-1].parent} or pass another --output-dir"
        )


def _check_resume_config(path: Path, config) -> None:
    """Refuse a resume the checkpoint cannot continue (CheckpointError); warn on the rest."""
    from aepo.backends.local.checkpoint import resume_differences, saved_run_config

    saved = saved_run_config(path)
    if saved is None:
        print(
            f"aepo train: warning: {path} does not record its config; "
            "cannot check that this config continues it",
            file=sys.stderr,
        )
        return
    notes = resume_differences(path, saved, config.model_dump())
    if notes:
        print(f"aepo train: warning: resuming {path} with changes: {notes}", file=sys.stderr)
