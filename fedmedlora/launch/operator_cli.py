"""`fedmedlora certs|superlink|supernode|connect|submit`: the deployment commands (deploy.py) on the command line.

    fedmedlora certs creds --host 127.0.0.1 --sites 3                        # trial CA, SuperLink cert, site keys
    fedmedlora superlink --certs creds                                        # TLS + SuperNode authentication
    fedmedlora connect consortium --superlink 127.0.0.1:9093 --root-certificates creds/ca.crt
    flwr supernode register creds/site0_key.pub consortium                    # once per site key
    fedmedlora supernode --superlink 127.0.0.1:9093 --root-certificates creds/ca.crt \\
        --auth-key creds/site0_key --data /data/site0/ner.tsv --task ner --port 9094
    fedmedlora submit consortium -c conf/ner-natural.toml                     # from the project folder
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

COMMANDS = ("certs", "superlink", "supernode", "connect", "submit")


def add_commands(sub: argparse._SubParsersAction) -> None:
    certs = sub.add_parser("certs", help="write a trial CA, a SuperLink TLS certificate and site key pairs")
    certs.add_argument("out", help="folder to write into")
    certs.add_argument("--host", action="append", default=[], help="SuperLink address the certificate is valid for "
                       "(IP or DNS name; repeatable; default 127.0.0.1 and localhost)")
    certs.add_argument("--sites", type=int, default=0, help="site key pairs to write (site0_key, site0_key.pub, ...)")

    link = sub.add_parser("superlink", help="start a SuperLink (TLS and SuperNode authentication by default)")
    link.add_argument("--certs", type=Path, help="folder with ca.crt, superlink.crt, superlink.key")
    link.add_argument("--insecure", action="store_true", help="no TLS (trials on one machine only)")
    link.add_argument("--no-auth", action="store_true", help="accept SuperNodes without a registered key")
    link.add_argument("--host", default="0.0.0.0")
    link.add_argument("--port", type=int, default=9093)
    link.add_argument("--database", help="SQLite file for the SuperLink's state (default: in memory)")

    node = sub.add_parser("supernode", help="start one site's SuperNode on its own data")
    node.add_argument("--superlink", required=True, help="SuperLink address host:port")
    node.add_argument("--data", action="append", default=[], help="this site's data file (repeatable)")
    node.add_argument("--name", default="", help="site name in the results (default: the file's name)")
    node.add_argument("--task", choices=("ner", "re", "instruct"), help="read the data with this task's reader now")
    node.add_argument("--partition-id", type=int, help="instead of --data: partition k of the bundled pool")
    node.add_argument("--num-partitions", type=int)
    node.add_argument("--root-certificates", type=Path, help="CA certificate the SuperLink's is signed with")
    node.add_argument("--insecure", action="store_true", help="no TLS (trials on one machine only)")
    node.add_argument("--auth-key", type=Path, help="this site's private key (its .pub registered on the SuperLink)")
    node.add_argument("--port", type=int, default=9094, help="this SuperNode's Runtime API port (one per SuperNode)")
    node.add_argument("--cache-dir", type=Path, help="where the site keeps its cache (default $FEDMEDLORA_CACHE)")

    connect = sub.add_parser("connect", help="name a SuperLink for flwr and fedmedlora submit ($FLWR_HOME/config.toml)")
    connect.add_argument("name")
    connect.add_argument("--superlink", required=True, help="SuperLink address host:port")
    connect.add_argument("--root-certificates", type=Path)
    connect.add_argument("--insecure", action="store_true")
    connect.add_argument("--default", action="store_true", help="make it flwr's default SuperLink")

    submit = sub.add_parser("submit", help="run the app on a SuperLink connection; exit 0 only if it completed")
    submit.add_argument("connection", help="a name given to `fedmedlora connect`")
    submit.add_argument("app_dir", nargs="?", default=".")
    submit.add_argument("--run-config", "-c", action="append", default=[],
                        help="a preset TOML file or \"key=value ...\" pairs; repeatable, later ones win")


def _exec(command: list[str]) -> int:
    from .deploy import flower_env

    print("fedmedlora: " + " ".join(command), flush=True)
    os.execvpe(command[0], command, flower_env())
    return 0  # not reached


def run_command(args: argparse.Namespace) -> int:
    from ..data.files import DataFormatError
    from ..settings import ConfigError
    from . import certs, deploy

    try:
        if args.command == "certs":
            files = certs.write_trial_credentials(Path(args.out), args.host or ["127.0.0.1", "localhost"], args.sites)
            for name, path in files.items():
                print(f"{name}: {path}")
            return 0
        if args.command == "superlink":
            if args.insecure == (args.certs is not None):
                raise ConfigError(["give --certs FOLDER (TLS) or --insecure"])
            return _exec(deploy.superlink_command(port=args.port, host=args.host, certs=args.certs,
                                                  auth=not args.no_auth and not args.insecure,
                                                  database=args.database))
        if args.command == "supernode":
            if args.insecure == (args.root_certificates is not None):
                raise ConfigError(["give --root-certificates ca.crt (TLS) or --insecure"])
            partition = None
            if args.partition_id is not None:
                partition = (args.partition_id, args.num_partitions or 0)
            return _exec(deploy.supernode_command(
                superlink=args.superlink, data=args.data, name=args.name, partition=partition,
                root_certificates=args.root_certificates, auth_key=args.auth_key, port=args.port,
                cache_dir=args.cache_dir, task=args.task))
        if args.command == "connect":
            path = deploy.write_connection(args.name, args.superlink, root_certificates=args.root_certificates,
                                           insecure=args.insecure, default=args.default)
            print(f"fedmedlora: SuperLink connection {args.name!r} ({args.superlink}) written to {path}")
            return 0
        return deploy.submit(args.app_dir, args.connection, args.run_config)
    except (ConfigError, DataFormatError) as err:
        print(f"fedmedlora: {err}", file=sys.stderr)
        return 2
