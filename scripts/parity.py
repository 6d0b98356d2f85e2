"""Do two commits produce the same outputs? The check a refactor must pass (issue 13).

    python scripts/parity.py --base origin/main [--head HEAD] [--customers 800] [--seed 7] [--keep DIR]
    python scripts/parity.py --base HEAD --head HEAD     # determinism: one commit, two runs

Each ref is checked out into a temporary git worktree and installed into its own folder
(`pip install --no-deps --target`, the way `make lint` builds the type-check tree; the
environment's packages serve the dependencies), then runs `cdp demo --customers N --seed S` on a
fresh workspace with default settings. The two workspaces are compared by
scripts/compare_workspaces.py: every table under staged/, identity/ and features/ (identity map,
feature and score tables) row for row, and the demo summaries' metrics (equal training sets give
equal metrics). Exit 1 when anything differs. Run from the repository root.
"""

from __future__ import annotations

import argparse
import configparser
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from compare_workspaces import FOLDERS, compare_summaries, compare_tables


def install(ref: str, into: Path) -> Path:
    """`ref` checked out in a worktree under `into`; returns the folder to put on PYTHONPATH (the
    environment's own packages serve the dependencies). Refs with the stage layout (a `cdp`
    namespace mapped by setuptools package-dir, ec9cced on) are installed without dependencies;
    older refs (top-level packages, no working non-editable install) run from the worktree."""
    tree, target = into / "src", into / "site"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), ref], check=True, capture_output=True)
    if (tree / "profiles").is_dir():  # the layout before the redesign
        return tree
    try:
        pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile", "--target", str(target)]
        done = subprocess.run([*pip, str(tree)], capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"installing {ref} failed:\n{done.stderr[-2000:]}")
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], check=True, capture_output=True)
    return target


def _entry_point(code: Path) -> str:
    """The `cdp` console script ("module:function") of a source tree or of an installed folder."""
    if (code / "pyproject.toml").exists():
        return tomllib.loads((code / "pyproject.toml").read_text())["project"]["scripts"]["cdp"]
    entry_points = configparser.ConfigParser()
    entry_points.read(next(code.glob("*.dist-info/entry_points.txt")))
    return entry_points["console_scripts"]["cdp"]


def build(code: Path, home: Path, customers: int, seed: int, port: int) -> None:
    """`cdp demo` on a fresh workspace with the ref's code at `code`, default settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDP_", "MLFLOW_"))}
    env |= {"PYTHONPATH": str(code), "CDP_HOME": str(home)}
    args = ["demo", "--customers", str(customers), "--seed", str(seed), "--port", str(port)]
    print(f"  cdp {' '.join(args)} --home {home}", flush=True)
    home.mkdir(parents=True, exist_ok=True)
    # The ref's own console-script entry point (the CLI module moved over time), run with this
    # interpreter; cwd outside the repository, whose cdp/ folder would shadow the ref's.
    module, function = _entry_point(code).split(":")
    command = [sys.executable, "-c", f"import {module} as m; m.{function}()", *args]
    run = subprocess.run(command, env=env, cwd=home.parent, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"cdp demo failed for {home}:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="git ref of the reference (e.g. the commit before a refactor)")
    parser.add_argument("--head", default="HEAD", help="git ref to check (default HEAD)")
    parser.add_argument("--customers", type=int, default=800)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--port", type=int, default=3137, help="port of the demo's BentoML server")
    parser.add_argument("--keep", type=Path, help="build here and keep the workspaces (default: a temporary folder)")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="cdp-parity-"))
    homes = {}
    for side, ref in (("base", args.base), ("head", args.head)):
        sha = subprocess.run(
            ["git", "rev-parse", "--short", ref], check=True, capture_output=True, text=True
        ).stdout.strip()
        print(f"{side}: {ref} ({sha})", flush=True)
        shutil.rmtree(root / side, ignore_errors=True)
        site = install(ref, root / side / "code")
        homes[side] = root / side / "workspace"
        build(site, homes[side], args.customers, args.seed, args.port)
    differences = compare_tables(homes["base"], homes["head"]) + compare_summaries(homes["base"], homes["head"])
    tables = sum(1 for folder in FOLDERS for _ in (homes["base"] / folder).rglob("*.parquet"))
    print(f"{tables} tables and the demo summary compared: {len(differences)} differences")
    for line in differences:
        print(" ", line)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    subprocess.run(["git", "worktree", "prune"], check=False)  # source-tree refs' worktrees
    return 1 if differences else 0


if __name__ == "__main__":
    raise SystemExit(main())
