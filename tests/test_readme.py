"""The README's Python example runs as written, on the tiny golden checkpoint in place of a released one."""

import pathlib
import re
import shutil
import subprocess
import sys

from model_test_utils import GOLDEN_DIR

REPO = pathlib.Path(__file__).resolve().parent.parent
RELEASED_DIR = "ckpts/B4-4-4H768-ELEC-TF"


def test_notebook_example_runs(tmp_path, monkeypatch):
    readme = (REPO / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    assert RELEASED_DIR in snippet and "extract_hiddens" in snippet

    released = tmp_path / RELEASED_DIR
    shutil.copytree(GOLDEN_DIR / "tiny_relshift", released)
    subprocess.run(
        [sys.executable, str(REPO / "scripts/make_demo_data.py"), f"--output_dir={tmp_path}"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    shutil.copy(tmp_path / "vocab.txt", released / "vocab.uncased.txt")

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(REPO / "tensorflow"))
    namespace = {}
    exec(
        compile(snippet.replace('sys.path.insert(0, "tensorflow")', "pass"), "README", "exec"),
        namespace,
    )

    assert namespace["summary"].shape == (1, 64)
    assert namespace["encoder_output"].shape == (1, 4, 64)  # 16 -> 8 -> 4 over three blocks
    assert namespace["last_hidden"].shape == (1, 16, 64)
    assert len(namespace["encoder_hiddens"]) == 6
