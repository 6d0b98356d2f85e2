"""Refresh docs/screenshots/: every figure the notebooks drew (their committed outputs) and each model
family's latest model card rendered by headless Chromium (Debian's `chromium`).

    .venv/bin/python scripts/screenshots.py --home data/notebooks-demo

Run after `make notebooks` (which builds data/notebooks-demo and saves the outputs in place).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "screenshots"
FAMILIES = ("churn", "next_best_product", "campaign_response")


def notebook_figures(out: Path) -> list[Path]:
    """Each image/png output of notebooks/0*.ipynb as <notebook>_fig<N>.png."""
    written = []
    for notebook in sorted((ROOT / "notebooks").glob("0*.ipynb")):
        cells = json.loads(notebook.read_text())["cells"]
        pngs = [o["data"]["image/png"] for c in cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
        for number, png in enumerate(pngs, start=1):
            path = out / f"{notebook.stem}_fig{number}.png"
            path.write_bytes(base64.b64decode(png))
            written.append(path)
    return written


def model_cards(home: Path, out: Path) -> list[Path]:
    """The latest run's model_card.html of each family, screenshotted full-page width."""
    import mlflow

    from cdp.workspace import Workspace, use_workspace

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("chromium is not installed: `apt-get install -y chromium` (Debian)")
    use_workspace(Workspace(home.resolve()))
    written = []
    for family in FAMILIES:
        runs = mlflow.search_runs(experiment_names=[family], order_by=["start_time DESC"], max_results=20)
        for run_id in runs.get("run_id", []):
            try:
                html = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model_card.html")
            except Exception:  # a run without a card (e.g. a monitoring run): look further back
                continue
            path = out / f"model_card_{family}.png"
            flags = ["--headless", "--disable-gpu", "--hide-scrollbars", "--window-size=1100,1800"]
            if os.geteuid() == 0:
                flags.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
            subprocess.run(
                [chromium, *flags, f"--screenshot={path}", Path(html).as_uri()],
                check=True,
                capture_output=True,
                timeout=60,
            )
            written.append(path)
            break
        else:
            print(f"{family}: no run with a model card")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=ROOT / "data" / "notebooks-demo", help="a trained workspace")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for path in notebook_figures(OUT) + model_cards(args.home, OUT):
        print(path)


if __name__ == "__main__":
    main()
