"""The `fedmedlora` command: `run` (a supervised `flwr run`), `config` (keys, presets), `eval` (the eval module),
`experiment` (zero-shot, single-site, centralized and federated side by side), and the deployment commands `certs`,
`superlink`, `supernode`, `connect`, `submit` (launch/operator_cli.py)."""

from __future__ import annotations

import argparse
import sys


def _config_command(args: argparse.Namespace) -> int:
    from .run_config import load_settings
    from .settings import ConfigError, describe, load_toml_overrides, pyproject_block

    if args.check:
        status = 0
        for path in args.check:
            try:
                load_settings(load_toml_overrides(path), source=path)
                print(f"{path}: ok")
            except ConfigError as err:
                print(err, file=sys.stderr)
                status = 2
        return status
    print(pyproject_block() if args.pyproject else describe())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fedmedlora", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the Flower app in a private local simulation (see README)")
    run.add_argument("app_dir", nargs="?", default=".", help="the Flower app folder (default: .)")
    run.add_argument("--run-config", "-c", action="append", default=[],
                     help="a preset TOML file or \"key=value ...\" pairs; repeatable, later ones win")
    run.add_argument("--federation-config", default="",
                     help="extra simulation options, e.g. \"client-resources-num-cpus=1\" (num-supernodes is set "
                          "from data.num-sites)")
    run.add_argument("--resume", metavar="RUN_DIR", default="",
                     help="continue a stopped run from its last completed round, with the run config it started with")

    config = sub.add_parser("config", help="list every run-config key, or check presets")
    config.add_argument("--pyproject", action="store_true", help="print the [tool.flwr.app.config] block")
    config.add_argument("--check", nargs="+", metavar="PRESET", help="validate preset files")

    from .launch.operator_cli import COMMANDS as OPERATOR_COMMANDS, add_commands, run_command

    add_commands(sub)
    sub.add_parser("eval", help="score checkpoints (same flags as eval/eval.py)", add_help=False)
    sub.add_parser("experiment", help="zero-shot, single-site, centralized and federated side by side "
                   "(see fedmedlora/experiment/)", add_help=False)

    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["eval"]:
        from .evaluation.cli import main as eval_main

        return eval_main(argv[1:])
    if argv[:1] == ["experiment"]:
        from .experiment.cli import main as experiment_main

        return experiment_main(argv[1:], prog="fedmedlora experiment")
    args = parser.parse_args(argv)
    if args.command in OPERATOR_COMMANDS:
        return run_command(args)
    if args.command == "run":
        from .launch.launcher import run as launch

        return launch(args.app_dir, args.run_config, args.federation_config, resume=args.resume)
    return _config_command(args)


if __name__ == "__main__":
    sys.exit(main())
