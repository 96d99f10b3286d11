"""Export a finetuned model as a TensorFlow SavedModel for serving (docs/export.md).

    python tensorflow/export.py --task=classification --task_name=mrpc --model_dir=exp/mrpc \\
      --tokenizer_path=vocab.uncased.txt --max_seq_length=128 --export_dir=serving/mrpc

writes `{export_dir}/{version}` (the layout TF Serving watches; version: the checkpoint's step) with the
signatures
  - `serving_default`: `input_ids`, `segment_ids` int32 and `input_mask` float32 (1.0 = padding) of
    shape [batch, length], length <= --max_seq_length ([batch, 4, length] for RACE; SQuAD adds `p_mask`);
  - `serve_text` and `tokenize` (classification, RACE): raw UTF-8 strings, tokenized in the graph
    exactly as --tokenizer_path tokenizes them in Python (`text_a`, and `text_b` for pair tasks; RACE:
    `article`, `question`, `options`).
The model is the config of --model_config or `model_dir/net_config.json` with the checkpoint
--init_checkpoint, else the one `model_dir/best_result.json` names, else the newest in --model_dir.
"""

import startup  # noqa: F401 (first: TensorFlow's start-up lines stay off the console)

# isort: split
import os
import tempfile

import tensorflow as tf
from absl import app, flags, logging

import classifier_utils
import data_utils
import export_utils
import model_utils
import modeling
import tokenization
import training

TASKS = ("classification", "race", "squad")
# The task scripts' --max_seq_length defaults.
_DEFAULT_SEQ_LEN = {"classification": 128, "race": 512, "squad": 512}

flags.DEFINE_bool("verbose", False, "Print tracebacks of errors and TensorFlow's start-up lines.")
flags.DEFINE_enum("task", "classification", TASKS, "The head to export.")
flags.DEFINE_string(
    "task_name", None, "classification: the task (classifier.py's --task_name), e.g. mrpc, sts-b."
)
flags.DEFINE_string("cls_scope", None, "classification: scope of the head; default the task name.")
flags.DEFINE_string("model_dir", "", "The training run: net_config.json and its checkpoints.")
flags.DEFINE_string(
    "init_checkpoint",
    "",
    "Checkpoint to export (a prefix, a directory, or <dir>/latest); default the one "
    "model_dir/best_result.json names if it still exists, else the newest in --model_dir.",
)
flags.DEFINE_string("export_dir", "", "Base directory; the SavedModel is {export_dir}/{version}.")
flags.DEFINE_integer(
    "version", 0, "Version directory name; default (0) the checkpoint's step, or 1 without one."
)
flags.DEFINE_bool("overwrite", False, "Replace an existing {export_dir}/{version}.")
flags.DEFINE_integer(
    "max_seq_length",
    None,
    "Sequence length the model was finetuned with (per choice for RACE); default the task script's "
    "(classification 128, race and squad 512). Inputs are padded to it.",
)
flags.DEFINE_integer("max_qa_length", 128, "race: most question+option pieces per choice.")
flags.DEFINE_bool(
    "text_signatures",
    True,
    "Also export serve_text and tokenize (TensorFlow Text ops); false for a server without them.",
)
flags.DEFINE_enum("precision", "float32", list(training.PRECISIONS), "Compute dtype of the model.")
flags.DEFINE_integer("start_n_top", 5, "squad: beam size of the start positions.")
flags.DEFINE_integer("end_n_top", 5, "squad: beam size of the end positions, per start.")
flags.DEFINE_bool("use_answer_class", True, "squad: the head has the answerability classifier.")
flags.DEFINE_bool("use_masked_loss", True, "squad: no probability outside the paragraph (p_mask).")
flags.DEFINE_bool("conditional_end", True, "squad: end logits conditioned on the start.")
training.define_model_flags()
training.define_tokenizer_flags()

FLAGS = flags.FLAGS


def _validate_flags():
    """Flag checks that need no file access; returns the classification processor (else None)."""
    for flag in ("export_dir", "tokenizer_path"):
        if not getattr(FLAGS, flag):
            raise ValueError(f"--{flag} is required")
    if not (FLAGS.model_dir or FLAGS.init_checkpoint):
        raise ValueError("give --model_dir (a training run) or --init_checkpoint")
    for flag in ("max_seq_length", "max_qa_length", "start_n_top", "end_n_top"):
        value = getattr(FLAGS, flag)
        if value is not None and value <= 0:
            raise ValueError(f"--{flag} must be > 0, got {value}")
    if FLAGS.version < 0:
        raise ValueError(
            f"--version must be positive (0: the checkpoint's step), got {FLAGS.version}"
        )
    if FLAGS.task == "classification":
        return classifier_utils.get_processor(FLAGS.task_name)
    return None


def _model_config(vocab_size, checkpoint):
    """--model_config, else the net_config.json of --model_dir, else the one beside `checkpoint` (an
    evaluation job's --model_dir holds best_result.json, its training run's directory the config)."""
    candidates = [
        os.path.join(d, "net_config.json")
        for d in (FLAGS.model_dir, os.path.dirname(checkpoint))
        if d
    ]
    config_path = FLAGS.model_config or next(
        (p for p in candidates if tf.io.gfile.exists(p)), candidates[0]
    )
    if not tf.io.gfile.exists(config_path):
        raise ValueError(f"{config_path} does not exist: pass --model_config")
    return training.model_config_from_flags(FLAGS, vocab_size, config_path)


def _checkpoint():
    """The checkpoint prefix to export (see --init_checkpoint)."""
    if FLAGS.init_checkpoint:
        return model_utils.resolve_checkpoint(FLAGS.init_checkpoint)
    if not tf.io.gfile.isdir(FLAGS.model_dir):
        raise ValueError(f"--model_dir={FLAGS.model_dir} does not exist")
    return model_utils.best_or_latest_checkpoint(FLAGS.model_dir)


def _head(model, processor):
    if FLAGS.task == "race":
        return export_utils.RaceHead(model, FLAGS.precision, FLAGS.truncate_seq)
    if FLAGS.task == "squad":
        return export_utils.SquadHead(
            model,
            FLAGS.start_n_top,
            FLAGS.end_n_top,
            FLAGS.use_answer_class,
            FLAGS.use_masked_loss,
            FLAGS.conditional_end,
            FLAGS.precision,
        )
    labels = None if processor.is_regression else processor.labels
    scope = FLAGS.cls_scope or processor.name
    return export_utils.ClassificationHead(
        model, labels, scope, FLAGS.precision, FLAGS.truncate_seq
    )


def run():
    processor = _validate_flags()
    max_seq_length = FLAGS.max_seq_length or _DEFAULT_SEQ_LEN[FLAGS.task]
    if FLAGS.task == "race" and FLAGS.max_qa_length > max_seq_length - 3:
        raise ValueError(
            f"--max_qa_length={FLAGS.max_qa_length} must be at most --max_seq_length - 3 = "
            f"{max_seq_length - 3} ([cls] QA [sep] passage [sep])"
        )
    if FLAGS.task == "squad" and max(FLAGS.start_n_top, FLAGS.end_n_top) > max_seq_length:
        raise ValueError("--start_n_top and --end_n_top must not exceed --max_seq_length")
    tokenizer = tokenization.get_tokenizer(
        FLAGS.tokenizer_type, FLAGS.tokenizer_path, FLAGS.uncased
    )
    special_ids = data_utils.setup_special_ids(tokenizer)
    checkpoint = _checkpoint()
    net_config = _model_config(special_ids.vocab_size, checkpoint)
    # SQuAD's predictions always truncate (squad.py passes no --truncate_seq).
    truncate_seq = True if FLAGS.task == "squad" else FLAGS.truncate_seq
    modeling.check_seq_len(net_config, max_seq_length, truncate_seq, FLAGS.task == "squad")

    model = modeling.FunnelTFM(net_config)
    head = _head(model, processor)
    export_utils.build_variables(head, max_seq_length)
    training.restore_checkpoint([model], checkpoint)
    logging.info("Exporting %s (%s) from %s.", FLAGS.task, FLAGS.task_name or "", checkpoint)

    version = FLAGS.version or model_utils.checkpoint_step(checkpoint) or 1
    with tempfile.TemporaryDirectory() as asset_dir:
        encoder = None
        if FLAGS.text_signatures and FLAGS.task != "squad":
            encoder = export_utils.text_encoder(tokenizer, asset_dir)
        module = export_utils.ServingModule(
            head,
            special_ids,
            max_seq_length,
            encoder,
            text_pair=processor is not None and processor.is_pair,
            max_qa_length=FLAGS.max_qa_length if FLAGS.task == "race" else None,
        )
        path = export_utils.save(module, FLAGS.export_dir, version, FLAGS.overwrite)
    print(path)


def main(_):
    data_utils.run_main(run, FLAGS.verbose)


if __name__ == "__main__":
    app.run(main)
