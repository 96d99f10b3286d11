"""The download scripts (data-scripts/download_{glue,textcls,ckpts}.sh) against a loopback HTTP mirror.

The mirror serves small files in the released formats (zips of GLUE's tsv folders, SentEval's MRPC text
files, tarballs of the csv datasets, of aclImdb and of a checkpoint folder) and honours range requests,
so that resuming can be seen in its request log. The scripts' URL bases and pinned sums are overridden
by environment variables (FUNNEL_*_URL, FUNNEL_SHA256).
"""

import hashlib
import http.server
import io
import os
import pathlib
import random
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import threading
import time
import zipfile

import pytest

import classifier_utils
import modeling
from model_test_utils import GOLDEN_DIR

REPO = pathlib.Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "data-scripts"
DOWNLOADERS = [d for d in ("wget", "curl") if shutil.which(d)]
GLUE_TASKS = [
    "CoLA",
    "SST-2",
    "MRPC",
    "QQP",
    "STS-B",
    "MNLI",
    "SNLI",
    "QNLI",
    "RTE",
    "WNLI",
    "diagnostic",
]
TEXTCLS_TASKS = ["imdb", "yelp5", "yelp2", "amazon5", "amazon2", "ag", "dbpedia"]
MODELS = ["B4-4-4H768", "B6-3x2-3x2H768", "B6-6-6H768", "B8-8-8H1024", "B10-10-10H1024"]


class Mirror:
    """A loopback HTTP server over in-memory files that honours `Range: bytes=N-`.

    `requests` logs (path, Range header) of every GET and `sent` the body bytes sent per path;
    `cut[path] = n` makes the first answer for `path` stop after byte n and close the connection, as a
    dropped download would; `stall[path] = n` makes it stop after byte n and hang until `release` is set;
    `ignore_range` makes it answer range requests with the whole file.
    """

    def __init__(self):
        self.files, self.requests, self.sent, self.cut, self.stall = {}, [], {}, {}, {}
        self.ignore_range = False  # answer range requests with the whole file, as some servers do
        self.release = threading.Event()
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                path = self.path.split("?")[0]
                byte_range = self.headers.get("Range")
                mirror.requests.append((path, byte_range))
                data = mirror.files.get(path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if byte_range and not mirror.ignore_range:
                    start = int(re.fullmatch(r"bytes=(\d+)-", byte_range).group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                stall = mirror.stall.pop(path, None)
                body = data[start : mirror.cut.pop(path, stall or len(data))]
                self.wfile.write(body)
                self.wfile.flush()
                mirror.sent[path] = mirror.sent.get(path, 0) + len(body)
                if stall is not None:
                    mirror.release.wait(30)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()


@pytest.fixture
def mirror():
    m = Mirror()
    yield m
    m.release.set()
    m.server.shutdown()
    m.server.server_close()


def closed_port_url():
    """A loopback URL nobody listens on: what an offline machine sees."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def clean_env():
    """The environment without FUNNEL_* settings and proxies (the mirror is on the loopback)."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FUNNEL_") and not k.lower().endswith("_proxy")
    }


def run(script, args, tmp_path, downloader=None, **env_vars):
    env = clean_env()
    if downloader:
        env["FUNNEL_DOWNLOADER"] = downloader
    env.update(env_vars)
    cmd = ["bash", str(SCRIPTS / script), *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)


def error_line(result):
    """The one line a failed run printed on stderr."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def table(script):
    """The script's pinned sums: {file name: sha256 or ''}."""
    text = (SCRIPTS / script).read_text()
    body = re.search(r'^sha256_sums="\n(.*?)^"$', text, re.S | re.M).group(1)
    return dict(entry.split("=", 1) for entry in body.split())


# --- small files in the released formats ------------------------------------------------------------


def tsv(*rows):
    return "".join("\t".join(str(c) for c in row) + "\n" for row in rows)


def nli_rows(label, genre=True):
    """MNLI rows (index, promptID, pairID, genre, 4 parses, sentence1, sentence2, label1, gold_label);
    SNLI's have no genre column."""
    ids = ["genre"] if genre else []
    rows = [["h"] * (11 + len(ids))]
    for i in range(3):
        rows.append(
            [i, i, f"{i}e", *ids, "(a)", "(b)", "(a)", "(b)", f"a{i}", f"b{i}", label, label]
        )
    return rows


# Each GLUE task's folder as the zip holds it, in the columns classifier_utils reads.
GLUE_FILES = {
    "CoLA": {
        "train.tsv": tsv(*[("gj04", i % 2, "", f"sentence {i} .") for i in range(4)]),
        "dev.tsv": tsv(("gj04", 1, "", "a sentence .")),
        "test.tsv": tsv(("index", "sentence"), (0, "a test sentence .")),
    },
    "SST-2": {
        "train.tsv": tsv(("sentence", "label"), ("good film", 1), ("bad film", 0)),
        "dev.tsv": tsv(("sentence", "label"), ("fine", 1)),
        "test.tsv": tsv(("index", "sentence"), (0, "a test")),
    },
    "QQP": {
        "train.tsv": tsv(
            ("id", "qid1", "qid2", "question1", "question2", "is_duplicate"),
            (0, 1, 2, "q1?", "q2?", 1),
        ),
        "dev.tsv": tsv(
            ("id", "qid1", "qid2", "question1", "question2", "is_duplicate"),
            (1, 3, 4, "q3?", "q4?", 0),
        ),
        "test.tsv": tsv(("id", "question1", "question2"), (0, "q?", "r?")),
    },
    "STS-B": {
        "train.tsv": tsv(
            tuple(f"c{i}" for i in range(10)),
            (0, "g", "f", 2012, 1, "s", "s", "a cat", "a dog", 3.2),
        ),
        "dev.tsv": tsv(
            tuple(f"c{i}" for i in range(10)), (0, "g", "f", 2012, 1, "s", "s", "a man", "men", 4.0)
        ),
        "test.tsv": tsv(
            tuple(f"c{i}" for i in range(9)), (0, "g", "f", 2012, 1, "s", "s", "x", "y")
        ),
    },
    "MNLI": {
        "train.tsv": tsv(*nli_rows("neutral")),
        "dev_matched.tsv": tsv(*nli_rows("entailment")),
        "dev_mismatched.tsv": tsv(*nli_rows("contradiction")),
        "test_matched.tsv": tsv(*nli_rows("")),
        "test_mismatched.tsv": tsv(*nli_rows("")),
    },
    "SNLI": {
        "train.tsv": tsv(*nli_rows("neutral", genre=False)),
        "dev.tsv": tsv(*nli_rows("entailment", genre=False)),
        "test.tsv": tsv(*nli_rows("contradiction", genre=False)),
    },
    "QNLI": {
        "train.tsv": tsv(
            ("index", "question", "sentence", "label"), (0, "who?", "him.", "entailment")
        ),
        "dev.tsv": tsv(
            ("index", "question", "sentence", "label"), (0, "what?", "no.", "not_entailment")
        ),
        "test.tsv": tsv(("index", "question", "sentence"), (0, "why?", "so.")),
    },
    "RTE": {
        "train.tsv": tsv(
            ("index", "sentence1", "sentence2", "label"), (0, "a b", "a", "entailment")
        ),
        "dev.tsv": tsv(
            ("index", "sentence1", "sentence2", "label"), (0, "c", "d", "not_entailment")
        ),
        "test.tsv": tsv(("index", "sentence1", "sentence2"), (0, "e", "f")),
    },
    "WNLI": {
        "train.tsv": tsv(
            ("index", "sentence1", "sentence2", "label"), (0, "it fell", "the cup fell", 1)
        ),
        "dev.tsv": tsv(
            ("index", "sentence1", "sentence2", "label"), (0, "it ran", "the cup ran", 0)
        ),
        "test.tsv": tsv(("index", "sentence1", "sentence2"), (0, "x", "y")),
    },
}
GLUE_ZIPS = {task: f"{task}.zip" for task in GLUE_FILES}
GLUE_ZIPS["QNLI"] = "QNLIv2.zip"


def glue_zip(task, padding=0):
    """The task's zip: a folder named after it (as GLUE's are), plus `padding` random bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, text in GLUE_FILES[task].items():
            z.writestr(f"{task}/{name}", text)
        if padding:
            z.writestr(f"{task}/original/padding.bin", random.Random(0).randbytes(padding))
    return buf.getvalue()


def crlf(text):
    return text.replace("\n", "\r\n").encode()


MRPC_HEADER = ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String")
MRPC_TRAIN = [(i % 2, 100 + i, 200 + i, f"first {i} .", f"second {i} .") for i in range(6)]
MRPC_TEST = [(1, 300, 400, "a test .", "the test ."), (0, 301, 401, "one .", "two .")]
MRPC_DEV_IDS = [(101, 201), (104, 204)]


def glue_files():
    """{URL path: bytes} of everything download_glue.sh fetches, under /glue and /senteval."""
    files = {f"/glue/{GLUE_ZIPS[task]}": glue_zip(task) for task in GLUE_FILES}
    files["/glue/AX.tsv"] = tsv(
        ("index", "sentence1", "sentence2"), (0, "a dog", "an animal")
    ).encode()
    files["/glue/mrpc_dev_ids.tsv"] = crlf(tsv(*MRPC_DEV_IDS))
    files["/senteval/msr_paraphrase_train.txt"] = crlf(tsv(MRPC_HEADER, *MRPC_TRAIN))
    files["/senteval/msr_paraphrase_test.txt"] = crlf(tsv(MRPC_HEADER, *MRPC_TEST))
    return files


def tar_gz(members):
    """A .tar.gz of {member path: bytes}."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


TEXTCLS_ARCHIVES = {
    "yelp5": ("yelp_review_full_csv", 5, 1),
    "yelp2": ("yelp_review_polarity_csv", 2, 1),
    "amazon5": ("amazon_review_full_csv", 5, 2),
    "amazon2": ("amazon_review_polarity_csv", 2, 2),
    "ag": ("ag_news_csv", 4, 2),
    "dbpedia": ("dbpedia_csv", 14, 2),
}


def textcls_files():
    """{URL path: bytes} of everything download_textcls.sh fetches, under /imdb and /fastai."""
    imdb = {
        "aclImdb/README": b"Large Movie Review Dataset v1.0\n",
        "aclImdb/imdb.vocab": b"the\nfilm\n",
    }
    for split in ("train", "test"):
        for label, stars in (("neg", 2), ("pos", 9)):
            for i in range(2):
                imdb[f"aclImdb/{split}/{label}/{i}_{stars}.txt"] = (
                    f"A {label} review.<br />".encode()
                )
    files = {"/imdb/aclImdb_v1.tar.gz": tar_gz(imdb)}
    for name, n_labels, n_texts in TEXTCLS_ARCHIVES.values():
        members = {f"{name}/readme.txt": b"Xiang Zhang's dataset\n"}
        for split in ("train", "test"):
            rows = [
                ",".join(
                    [f'"{1 + i % n_labels}"'] + [f'"text {i}, part {j}"' for j in range(n_texts)]
                )
                for i in range(n_labels)
            ]
            members[f"{name}/{split}.csv"] = ("\n".join(rows) + "\n").encode()
        files[f"/fastai/{name}.tgz"] = tar_gz(members)
    return files


def ckpt_archive(name):
    """A released-style checkpoint archive: one folder `name` with the tiny golden model's files."""
    return tar_gz(
        {f"{name}/{f.name}": f.read_bytes() for f in (GOLDEN_DIR / "tiny_relshift").iterdir()}
    )


def pins(files):
    """FUNNEL_SHA256 pinning the served files' own sums."""
    return " ".join(f"{path.rsplit('/', 1)[1]}={sha256(data)}" for path, data in files.items())


# --- usage ------------------------------------------------------------------------------------------

SCRIPT_VARS = {
    "download_glue.sh": (
        "FUNNEL_GLUE_URL",
        "FUNNEL_SENTEVAL_URL",
        "FUNNEL_SHA256",
        "FUNNEL_DOWNLOADER",
    ),
    "download_textcls.sh": (
        "FUNNEL_IMDB_URL",
        "FUNNEL_TEXTCLS_URL",
        "FUNNEL_SHA256",
        "FUNNEL_DOWNLOADER",
    ),
    "download_ckpts.sh": ("FUNNEL_CKPT_URL", "FUNNEL_SHA256", "FUNNEL_DOWNLOADER"),
}


@pytest.mark.parametrize("flag", ["--help", "-h"])
@pytest.mark.parametrize("script", sorted(SCRIPT_VARS))
def test_help_prints_the_usage(tmp_path, script, flag):
    result = run(script, [flag], tmp_path)
    assert result.returncode == 0 and result.stderr == ""
    assert f"Usage: bash data-scripts/{script} [-h|--help]" in result.stdout
    for var in SCRIPT_VARS[script]:
        assert var in result.stdout
    assert "set -euo" not in result.stdout
    assert list(tmp_path.iterdir()) == []  # --help is not a target directory


@pytest.mark.parametrize("script", sorted(SCRIPT_VARS))
def test_an_unknown_option_is_a_usage_error(tmp_path, script):
    result = run(script, ["out", "--bogus"], tmp_path)
    assert result.returncode == 2
    assert error_line(result) == f"{script}: error: unknown option '--bogus' (see --help)"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "script, args, valid",
    [
        ("download_glue.sh", ["data", "CoLA", "cola"], GLUE_TASKS),
        ("download_textcls.sh", ["data", "imdb", "yelp"], TEXTCLS_TASKS),
        ("download_ckpts.sh", ["ckpts", "TF", "B4-4-4H768", "B12"], MODELS),
        ("download_ckpts.sh", ["ckpts", "PT"], ["TF", "FULL-TF"]),
    ],
)
def test_an_unknown_name_lists_the_valid_ones(tmp_path, script, args, valid):
    result = run(script, args, tmp_path)
    assert result.returncode == 2
    line = error_line(result)
    assert f"'{args[-1]}'" in line and line.endswith("choose from " + " ".join(valid))
    assert list(tmp_path.iterdir()) == []


# --- failures ---------------------------------------------------------------------------------------

# script, arguments, URL variable, the base path under it, the file the first download fetches
FIRST_DOWNLOAD = [
    ("download_glue.sh", ["data/glue", "CoLA"], "FUNNEL_GLUE_URL", "/glue", "CoLA.zip"),
    (
        "download_glue.sh",
        ["data/glue", "MRPC"],
        "FUNNEL_SENTEVAL_URL",
        "/senteval",
        "msr_paraphrase_train.txt",
    ),
    (
        "download_textcls.sh",
        ["data/text_cls", "ag"],
        "FUNNEL_TEXTCLS_URL",
        "/fastai",
        "ag_news_csv.tgz",
    ),
    (
        "download_textcls.sh",
        ["data/text_cls", "imdb"],
        "FUNNEL_IMDB_URL",
        "/imdb",
        "aclImdb_v1.tar.gz",
    ),
    (
        "download_ckpts.sh",
        ["ckpts", "TF", "B6-6-6H768"],
        "FUNNEL_CKPT_URL",
        "/ckpt",
        "B6-6-6H768-ELEC-TF.tar.gz",
    ),
]
FIRST_IDS = [f"{case[0]}-{case[4]}" for case in FIRST_DOWNLOAD]


@pytest.mark.parametrize("downloader", DOWNLOADERS)
@pytest.mark.parametrize("script, args, var, base, file", FIRST_DOWNLOAD, ids=FIRST_IDS)
def test_offline_is_one_line_naming_the_url_and_leaves_nothing(
    tmp_path, downloader, script, args, var, base, file
):
    url = closed_port_url()
    result = run(script, args, tmp_path, downloader, **{var: url + base})
    assert result.returncode == 1
    line = error_line(result)
    assert line.startswith(
        f"{script}: error: cannot download {url}{base}/{file}: could not connect"
    )
    assert list(tmp_path.iterdir()) == []  # not even an empty data/ or ckpts/


@pytest.mark.parametrize("downloader", DOWNLOADERS)
@pytest.mark.parametrize("script, args, var, base, file", FIRST_DOWNLOAD, ids=FIRST_IDS)
def test_http_404_is_one_line_with_the_status(
    tmp_path, mirror, downloader, script, args, var, base, file
):
    result = run(script, args, tmp_path, downloader, **{var: mirror.url + base})
    assert result.returncode == 1
    assert (
        error_line(result)
        == f"{script}: error: cannot download {mirror.url}{base}/{file}: HTTP 404 Not Found"
    )
    assert list(tmp_path.iterdir()) == []


def test_an_unresolvable_host_says_so(tmp_path):
    result = run(
        "download_glue.sh",
        ["data", "RTE"],
        tmp_path,
        FUNNEL_GLUE_URL="http://no-such-host.invalid/glue",
    )
    assert result.returncode == 1
    line = error_line(result)
    assert (
        "http://no-such-host.invalid/glue/RTE.zip" in line and "could not resolve the host" in line
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("script, args, var, base, file", FIRST_DOWNLOAD, ids=FIRST_IDS)
def test_a_checksum_mismatch_names_the_file_and_leaves_nothing(
    tmp_path, mirror, script, args, var, base, file
):
    bad = b"not the released file\n"
    mirror.files[f"{base}/{file}"] = bad
    env = {var: mirror.url + base}
    if not table(script).get(file):  # not pinned in the script (the checkpoints): pin a wrong sum
        env["FUNNEL_SHA256"] = f"{file}={'0' * 64}"
    result = run(script, args, tmp_path, **env)
    assert result.returncode == 1
    line = error_line(result)
    assert line.startswith(
        f"{script}: error: checksum mismatch for {file} from {mirror.url}{base}/{file}: "
    )
    assert f"sha256 {sha256(bad)}, expected " in line
    assert list(tmp_path.iterdir()) == []


def test_a_malformed_pinned_sum_is_refused(tmp_path, mirror):
    result = run(
        "download_glue.sh",
        ["data", "RTE"],
        tmp_path,
        FUNNEL_GLUE_URL=mirror.url,
        FUNNEL_SHA256="RTE.zip=abc",
    )
    assert result.returncode == 1
    assert "the sha256 given for RTE.zip is not a sha256" in error_line(result)
    assert mirror.requests == [] and list(tmp_path.iterdir()) == []


def test_a_damaged_unpinned_archive_is_one_line_and_removed(tmp_path, mirror):
    mirror.files["/glue/QQP.zip"] = b"PK\x03\x04 truncated"  # QQP.zip has no pinned sum
    result = run(
        "download_glue.sh", ["data", "QQP"], tmp_path, FUNNEL_GLUE_URL=mirror.url + "/glue"
    )
    assert result.returncode == 1
    assert error_line(result).startswith(
        "download_glue.sh: error: cannot unpack QQP.zip (removed; rerun"
    )
    assert list(tmp_path.iterdir()) == []


# --- resuming ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("downloader", DOWNLOADERS)
def test_a_partial_download_is_resumed(tmp_path, mirror, downloader):
    data = glue_zip("RTE", padding=50_000)
    mirror.files["/glue/RTE.zip"] = data
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "RTE.zip.part").write_bytes(data[:20_000])  # what an interrupted run left
    result = run(
        "download_glue.sh", ["data", "RTE"], tmp_path, downloader,
        FUNNEL_GLUE_URL=mirror.url + "/glue", FUNNEL_SHA256=f"RTE.zip={sha256(data)}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "RTE.zip: resuming after 20000 bytes" in result.stdout
    assert mirror.requests == [("/glue/RTE.zip", "bytes=20000-")]
    assert mirror.sent["/glue/RTE.zip"] == len(data) - 20_000
    assert os.listdir(data_dir) == ["RTE"]
    assert (data_dir / "RTE" / "train.tsv").read_text() == GLUE_FILES["RTE"]["train.tsv"]


def test_a_complete_download_left_before_unpacking_is_used(tmp_path, mirror):
    data = glue_zip("RTE")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "RTE.zip").write_bytes(data)  # a run stopped after its download
    env = {"FUNNEL_GLUE_URL": mirror.url + "/glue", "FUNNEL_SHA256": f"RTE.zip={sha256(data)}"}
    result = run("download_glue.sh", ["data", "RTE"], tmp_path, **env)
    assert result.returncode == 0, result.stderr
    assert "RTE.zip: already downloaded" in result.stdout and mirror.requests == []
    assert os.listdir(tmp_path / "data") == ["RTE"]


@pytest.mark.parametrize("downloader", DOWNLOADERS)
def test_a_server_that_ignores_ranges_gets_the_whole_file_again(tmp_path, mirror, downloader):
    data = glue_zip("WNLI", padding=30_000)
    mirror.files["/glue/WNLI.zip"] = data
    mirror.ignore_range = True
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "WNLI.zip.part").write_bytes(data[:10_000])
    result = run(
        "download_glue.sh",
        ["data", "WNLI"],
        tmp_path,
        downloader,
        FUNNEL_GLUE_URL=mirror.url + "/glue",
        FUNNEL_SHA256=f"WNLI.zip={sha256(data)}",
    )
    assert result.returncode == 0, result.stderr
    assert "WNLI.zip: sha256 verified" in result.stdout
    assert os.listdir(tmp_path / "data") == ["WNLI"]


@pytest.mark.parametrize("downloader", DOWNLOADERS)
def test_a_dropped_connection_is_resumed(tmp_path, mirror, downloader):
    data = ckpt_archive("B4-4-4H768-ELEC-TF")
    mirror.files["/ckpt/B4-4-4H768-ELEC-TF.tar.gz"] = data
    mirror.cut["/ckpt/B4-4-4H768-ELEC-TF.tar.gz"] = half = len(data) // 2
    args = ["ckpts", "TF", "B4-4-4H768"]
    env = {
        "FUNNEL_CKPT_URL": mirror.url + "/ckpt",
        "FUNNEL_SHA256": f"B4-4-4H768-ELEC-TF.tar.gz={sha256(data)}",
    }
    result = run("download_ckpts.sh", args, tmp_path, downloader, **env)
    if result.returncode != 0:  # curl gives up on a cut transfer (wget retries by itself): rerun
        assert result.returncode == 1
        assert "rerun to resume" in error_line(result)
        assert os.listdir(tmp_path / "ckpts") == ["B4-4-4H768-ELEC-TF.tar.gz.part"]
        assert (tmp_path / "ckpts" / "B4-4-4H768-ELEC-TF.tar.gz.part").stat().st_size == half
        result = run("download_ckpts.sh", args, tmp_path, downloader, **env)
    assert result.returncode == 0, result.stderr
    assert mirror.requests == [
        ("/ckpt/B4-4-4H768-ELEC-TF.tar.gz", None),
        ("/ckpt/B4-4-4H768-ELEC-TF.tar.gz", f"bytes={half}-"),
    ]
    assert mirror.sent["/ckpt/B4-4-4H768-ELEC-TF.tar.gz"] == len(data)
    assert os.listdir(tmp_path / "ckpts") == ["B4-4-4H768-ELEC-TF"]
    assert (tmp_path / "ckpts/B4-4-4H768-ELEC-TF/model.ckpt.index").read_bytes() == (
        GOLDEN_DIR / "tiny_relshift/model.ckpt.index"
    ).read_bytes()


@pytest.mark.parametrize("downloader", DOWNLOADERS)
def test_an_interrupted_run_keeps_the_part_file_and_the_rerun_resumes_it(
    tmp_path, mirror, downloader
):
    csv = b'"1","a title","a text"\n'
    padding = random.Random(1).randbytes(200_000)  # big enough to pass the tools' write buffers
    data = tar_gz(
        {"ag_news_csv/train.csv": csv, "ag_news_csv/test.csv": csv, "ag_news_csv/pad": padding}
    )
    mirror.files["/fastai/ag_news_csv.tgz"] = data
    mirror.stall["/fastai/ag_news_csv.tgz"] = half = len(data) // 2
    env = {
        "FUNNEL_TEXTCLS_URL": mirror.url + "/fastai",
        "FUNNEL_SHA256": f"ag_news_csv.tgz={sha256(data)}",
    }
    cmd = ["bash", str(SCRIPTS / "download_textcls.sh"), "data", "ag"]
    # In a session of its own, so that the signal reaches the download tool too (as Ctrl-C does).
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env={**clean_env(), **env, "FUNNEL_DOWNLOADER": downloader},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    part = tmp_path / "data" / "ag_news_csv.tgz.part"
    try:
        deadline = time.monotonic() + 20
        while not (part.exists() and part.stat().st_size > half - 20_000):
            assert time.monotonic() < deadline, "the download did not start"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
        mirror.release.set()
    assert proc.returncode != 0
    assert os.listdir(tmp_path / "data") == ["ag_news_csv.tgz.part"]  # no task or staging folder
    kept = part.read_bytes()
    assert kept and data.startswith(kept)

    result = run("download_textcls.sh", ["data", "ag"], tmp_path, downloader, **env)
    assert result.returncode == 0, result.stderr
    assert mirror.requests[-1] == ("/fastai/ag_news_csv.tgz", f"bytes={len(kept)}-")
    assert os.listdir(tmp_path / "data") == ["ag"]
    assert (tmp_path / "data" / "ag" / "train.csv").read_bytes() == csv


# --- successful downloads ---------------------------------------------------------------------------


@pytest.mark.parametrize("downloader", DOWNLOADERS)
def test_download_glue_writes_every_task_as_classifier_reads_it(tmp_path, mirror, downloader):
    files = glue_files()
    mirror.files.update(files)
    env = {
        "FUNNEL_GLUE_URL": mirror.url + "/glue",
        "FUNNEL_SENTEVAL_URL": mirror.url + "/senteval",
        "FUNNEL_SHA256": pins(files),
    }
    result = run("download_glue.sh", ["out/glue"], tmp_path, downloader, **env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    data_dir = tmp_path / "out" / "glue"
    # Only the task folders: no archive, .part or staging folder is left.
    assert sorted(os.listdir(data_dir)) == sorted(GLUE_TASKS)
    # Every downloaded file has an entry in the script's table (a misspelt name would go unverified).
    assert {path.rsplit("/", 1)[1] for path, _ in mirror.requests} <= set(table("download_glue.sh"))

    for task in GLUE_TASKS:
        for name in ("mnli_matched", "mnli_mismatched") if task == "MNLI" else (task,):
            processor = classifier_utils.get_processor(name)
            for split in processor.splits:
                assert processor.get_examples(str(data_dir / task), split), (task, split)
    for task, task_files in GLUE_FILES.items():
        for name, text in task_files.items():
            assert (data_dir / task / name).read_text() == text
    for name, task in (("mnli_matched", "MNLI"), ("snli", "SNLI")):
        dev = classifier_utils.get_processor(name).get_examples(str(data_dir / task), "dev")
        assert [(e.text_a, e.text_b, e.label) for e in dev][0] == ("a0", "b0", "entailment"), name

    # MRPC: SentEval's train file split by GLUE's dev ids; the test file re-indexed.
    mrpc = classifier_utils.get_processor("MRPC")
    dev = mrpc.get_examples(str(data_dir / "MRPC"), "dev")
    assert [(e.text_a, e.label) for e in dev] == [("first 1 .", "1"), ("first 4 .", "0")]
    train = mrpc.get_examples(str(data_dir / "MRPC"), "train")
    assert [e.text_a for e in train] == [f"first {i} ." for i in (0, 2, 3, 5)]
    assert (data_dir / "MRPC" / "test.tsv").read_text() == tsv(
        ("index", "#1 ID", "#2 ID", "#1 String", "#2 String"),
        (0, 300, 400, "a test .", "the test ."),
        (1, 301, 401, "one .", "two ."),
    )
    assert b"\r" not in (data_dir / "MRPC" / "train.tsv").read_bytes()
    assert (data_dir / "diagnostic" / "diagnostic.tsv").read_bytes() == files["/glue/AX.tsv"]

    # A second run finds every task in place and downloads nothing.
    mirror.requests.clear()
    again = run("download_glue.sh", ["out/glue"], tmp_path, downloader, **env)
    assert again.returncode == 0 and mirror.requests == []
    assert "CoLA: out/glue/CoLA exists, skipped" in again.stdout


def test_download_textcls_writes_every_task_as_classifier_reads_it(tmp_path, mirror):
    files = textcls_files()
    mirror.files.update(files)
    env = {
        "FUNNEL_IMDB_URL": mirror.url + "/imdb",
        "FUNNEL_TEXTCLS_URL": mirror.url + "/fastai",
        "FUNNEL_SHA256": pins(files),
    }
    result = run("download_textcls.sh", [], tmp_path, **env)  # default DATA_DIR and tasks
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    data_dir = tmp_path / "data" / "text_cls"
    assert sorted(os.listdir(data_dir)) == sorted(TEXTCLS_TASKS)
    assert {path.rsplit("/", 1)[1] for path, _ in mirror.requests} <= set(
        table("download_textcls.sh")
    )
    for task in TEXTCLS_TASKS:
        processor = classifier_utils.get_processor(task)
        for split in processor.splits:
            assert processor.get_examples(str(data_dir / task), split)
    for task, (_, n_labels, _) in TEXTCLS_ARCHIVES.items():
        assert sorted(os.listdir(data_dir / task)) == ["test.csv", "train.csv"]
        assert (
            len(classifier_utils.get_processor(task).get_examples(str(data_dir / task), "train"))
            == n_labels
        )
    assert sorted(os.listdir(data_dir / "imdb")) == ["README", "imdb.vocab", "test", "train"]
    assert (
        len(classifier_utils.get_processor("imdb").get_examples(str(data_dir / "imdb"), "train"))
        == 4
    )


def test_download_ckpts_unpacks_every_model(tmp_path, mirror):
    names = [f"{model}-ELEC-TF" for model in MODELS]
    files = {f"/ckpt/{name}.tar.gz": ckpt_archive(name) for name in names}
    mirror.files.update(files)
    result = run(
        "download_ckpts.sh",
        [],
        tmp_path,
        FUNNEL_CKPT_URL=mirror.url + "/ckpt",
        FUNNEL_SHA256=pins(files),
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and "not pinned" not in result.stdout
    assert sorted(os.listdir(tmp_path / "ckpts")) == sorted(names)
    golden = sorted(p.name for p in (GOLDEN_DIR / "tiny_relshift").iterdir())
    for name in names:
        assert sorted(os.listdir(tmp_path / "ckpts" / name)) == golden
    config = modeling.ModelConfig.init_from_json(
        str(tmp_path / "ckpts" / names[0] / "net_config.json")
    )
    assert config.block_size == "2_2_2"
    assert set(table("download_ckpts.sh")) >= {f"{name}.tar.gz" for name in names}


def test_an_unpinned_file_is_used_and_its_sum_printed(tmp_path, mirror):
    data = ckpt_archive("B6-6-6H768-ELEC-FULL-TF")
    mirror.files["/ckpt/B6-6-6H768-ELEC-FULL-TF.tar.gz"] = data
    result = run(
        "download_ckpts.sh",
        ["c", "FULL-TF", "B6-6-6H768"],
        tmp_path,
        FUNNEL_CKPT_URL=mirror.url + "/ckpt",
    )
    assert result.returncode == 0, result.stderr
    assert (
        f"B6-6-6H768-ELEC-FULL-TF.tar.gz: sha256 {sha256(data)} (not pinned, so not verified)"
        in result.stdout
    )
    assert os.listdir(tmp_path / "c") == ["B6-6-6H768-ELEC-FULL-TF"]


# --- the tables -------------------------------------------------------------------------------------


@pytest.mark.parametrize("script", sorted(SCRIPT_VARS))
def test_the_pinned_sums_are_sha256_or_empty(script):
    sums = table(script)
    assert sums
    for name, value in sums.items():
        assert re.fullmatch(r"[0-9a-f]{64}|", value), (name, value)
    if script != "download_ckpts.sh":  # the released GLUE/SentEval files and archives are pinned
        unpinned = {name for name, value in sums.items() if not value}
        assert unpinned == ({"QQP.zip", "SNLI.zip"} if script == "download_glue.sh" else set())


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_the_scripts_are_shellcheck_clean():
    scripts = sorted(str(p) for p in SCRIPTS.glob("*.sh"))
    result = subprocess.run(
        ["shellcheck", "-x", *scripts], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout
