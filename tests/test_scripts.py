"""The shell scripts users run: checkpoint download and the quick start's data."""

import functools
import http.server
import os
import pathlib
import subprocess
import sys
import tarfile
import threading

import pytest

import data_utils
import modeling
import tokenization
from model_test_utils import GOLDEN_DIR

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture
def mirror(tmp_path):
    """A loopback HTTP server over a folder holding a released-style checkpoint archive."""
    served = tmp_path / "served"
    served.mkdir()
    with tarfile.open(served / "B4-4-4H768-ELEC-TF.tar.gz", "w:gz") as tar:
        for f in (GOLDEN_DIR / "tiny_relshift").iterdir():
            tar.add(f, arcname=f"B4-4-4H768-ELEC-TF/{f.name}")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_ckpts_unpacks_a_loadable_checkpoint(tmp_path, mirror):
    env = dict(os.environ, FUNNEL_CKPT_URL=mirror)
    cmd = ["bash", str(REPO / "data-scripts/download_ckpts.sh"), str(tmp_path / "ckpts"), "TF"]
    subprocess.run([*cmd, "B4-4-4H768"], check=True, env=env, capture_output=True, timeout=120)
    model_dir = tmp_path / "ckpts" / "B4-4-4H768-ELEC-TF"
    config = modeling.ModelConfig.init_from_json(str(model_dir / "net_config.json"))
    assert config.block_size == "2_2_2"
    assert (model_dir / "model.ckpt.index").exists()

    missing = subprocess.run(
        [*cmd, "B8-8-8H1024"], env=env, capture_output=True, text=True, timeout=120
    )
    assert missing.returncode != 0
    assert not (tmp_path / "ckpts" / "B8-8-8H1024-ELEC-TF").exists()


def test_demo_data_matches_the_golden_checkpoint_vocabulary(tmp_path):
    subprocess.run(
        [sys.executable, str(REPO / "scripts/make_demo_data.py"), f"--output_dir={tmp_path}"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    tokenizer = tokenization.get_tokenizer("word_piece", str(tmp_path / "vocab.txt"))
    special = data_utils.setup_special_ids(tokenizer)
    config = modeling.ModelConfig.init_from_json(str(GOLDEN_DIR / "tiny_relshift/net_config.json"))
    assert special.vocab_size == config.vocab_size
    assert (special.pad_id, special.cls_id, special.sep_id) == (0, 1, 2)
    rows = (tmp_path / "MRPC" / "train.tsv").read_text().splitlines()[1:]
    labels = [row.split("\t")[0] for row in rows]
    assert set(labels) == {"0", "1"} and 0.35 < labels.count("1") / len(labels) < 0.65
    for row in rows[:20]:
        for text in row.split("\t")[3:5]:
            assert tokenizer.get_token_id("<unk>") not in tokenizer.convert_text_to_ids(text)
