"""Imported first by every script, before TensorFlow: a quiet start.

TensorFlow 2.21 prints its start-up lines (`oneDNN custom operations are on`, `Could not find cuda
drivers`, `failed call to cuInit` on a machine without a GPU driver) through absl's C++ logging
before `absl::InitializeLog()` runs, so `TF_CPP_MIN_LOG_LEVEL` does not reach them. They come while
TensorFlow loads and while it first looks for GPUs: both happen here with the process's stderr
pointed at a temporary file, which is shown only when the import fails. Later C++ warnings follow
`TF_CPP_MIN_LOG_LEVEL`, which defaults to 2 (errors only), and TensorFlow's Python log lines are
printed once, by absl's handler.

`--verbose`, or `TF_CPP_MIN_LOG_LEVEL=0` in the environment, keeps every line.
"""

import os
import sys
import tempfile


def _verbose(argv):
    for arg in argv[1:]:
        name, _, value = arg.partition("=")
        if name == "--verbose" and value.lower() in ("", "true", "t", "1"):
            return True
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0"


def _import_tensorflow_quietly():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
            # absl's handler on the root logger prints TensorFlow's Python log lines already; without
            # this, each came twice ("INFO:tensorflow:..." and absl's own format).
            tf.get_logger().handlers.clear()
        except BaseException:
            os.dup2(saved_stderr, 2)
            captured.seek(0)
            sys.stderr.buffer.write(captured.read())
            sys.stderr.flush()
            raise
        finally:
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)


if "tensorflow" not in sys.modules and not _verbose(sys.argv):
    _import_tensorflow_quietly()
