"""Execute notebooks/walkthrough.ipynb with nbclient; ``--inplace`` stores its outputs in the file."""

import argparse
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

PATH = Path(__file__).resolve().parents[1] / "notebooks" / "walkthrough.ipynb"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inplace", action="store_true")
    args = parser.parse_args()
    nb = nbformat.read(PATH, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(PATH.parent.parent)}}
                   ).execute()
    print(f"executed in {time.perf_counter() - start:.0f} s")
    if args.inplace:
        nbformat.write(nb, PATH)


if __name__ == "__main__":
    main()
