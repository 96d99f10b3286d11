"""Exports a checkpoint as a Hugging Face Funnel model directory (docs/export_hf.md).

    python tensorflow/export_hf.py --model_dir=exp/mrpc --task_name=mrpc --output_dir=hf/mrpc

reads `net_config.json` and a checkpoint of --model_dir (core-only, a finetuned classifier with its head,
or a full pretraining checkpoint) and writes into --output_dir:
  - `model.safetensors`: the weights under Hugging Face's names (`FunnelModel`, `FunnelBaseModel`,
    `FunnelForSequenceClassification`, `FunnelForMultipleChoice` or `FunnelForPreTraining`, see --head);
  - the tokenizer: `vocab.txt` + `tokenizer_config.json` (FunnelTokenizer), or `spiece.model` +
    `tokenizer_config.json` (AlbertTokenizer) for a sentencepiece model;
  - `config.json` (a FunnelConfig), last, so a directory with it is complete.
Load it with `transformers.AutoModel.from_pretrained(dir)` (or the class in config.json's `architectures`)
and `AutoTokenizer.from_pretrained(dir)`; no PyTorch is needed to export. What Hugging Face's port computes
differently is refused with the reason.
"""

import startup  # noqa: F401 (first: TensorFlow's start-up lines stay off the console)

# isort: split
import os

import tensorflow as tf
from absl import app, flags, logging

import classifier_utils
import data_utils
import export_hf_utils
import model_utils
import modeling
import tokenization

flags.DEFINE_bool("verbose", False, "Print the traceback of an error.")
flags.DEFINE_string(
    "model_dir",
    "",
    "Directory with net_config.json and the checkpoint (and usually the vocabulary).",
)
flags.DEFINE_string(
    "checkpoint",
    "",
    "Checkpoint prefix to export; default: the best one of model_dir/best_result.json, else the newest "
    "in --model_dir.",
)
flags.DEFINE_string("output_dir", "", "Local directory of the Hugging Face model to write.")
flags.DEFINE_bool("overwrite", False, "Replace the files of an existing export in --output_dir.")
flags.DEFINE_enum(
    "head",
    "auto",
    export_hf_utils.HEADS,
    "auto: the checkpoint's head (classification or regression -> FunnelForSequenceClassification, "
    "RACE -> FunnelForMultipleChoice, ELECTRA discriminator -> FunnelForPreTraining) or none; refuses "
    "several heads or one Hugging Face cannot express. none: the backbone only (FunnelModel with the "
    "decoder, else FunnelBaseModel). classification, race, discriminator: that head.",
)
flags.DEFINE_string(
    "cls_scope",
    None,
    "Scope of the classification head (model/<cls_scope>/logit); default: the task name, else the "
    "checkpoint's only one.",
)
flags.DEFINE_string(
    "task_name", None, "classifier.py task of a classification head: its label names and scope."
)
flags.DEFINE_bool(
    "base_model", False, "Leave the decoder out (FunnelBaseModel) even when the checkpoint has one."
)
flags.DEFINE_bool(
    "truncate_seq",
    True,
    "The --truncate_seq the model was trained with (written as FunnelConfig's truncate_seq).",
)
flags.DEFINE_enum(
    "tokenizer_type",
    None,
    list(tokenization.TOKENIZER_TYPES),
    "Default: what the vocabulary's name implies (*.model: sent_piece, else word_piece).",
)
flags.DEFINE_string(
    "tokenizer_path",
    None,
    "Vocabulary or sentencepiece model; default: vocab.uncased.txt, vocab.cased.txt, vocab.txt or "
    "*.model in --model_dir.",
)
flags.DEFINE_bool(
    "uncased", None, "Lower-case (default: as the vocabulary's name says, uncased unless 'cased')."
)

FLAGS = flags.FLAGS


def _checkpoint():
    if FLAGS.checkpoint:
        return model_utils.resolve_checkpoint(FLAGS.checkpoint)
    return model_utils.best_or_latest_checkpoint(FLAGS.model_dir)


def _tokenizer():
    return tokenization.get_model_dir_tokenizer(
        FLAGS.model_dir, FLAGS.tokenizer_type, FLAGS.tokenizer_path, FLAGS.uncased
    )


def _run():
    for flag in ("model_dir", "output_dir"):
        if not getattr(FLAGS, flag):
            raise ValueError(f"--{flag} is required")
    if "://" in FLAGS.output_dir:
        raise ValueError(
            f"--output_dir={FLAGS.output_dir} must be a local directory (Hugging Face loads from one)"
        )
    # Before any work; the export itself replaces only the files it writes.
    exists = tf.io.gfile.isdir(FLAGS.output_dir)
    if exists and tf.io.gfile.listdir(FLAGS.output_dir) and not FLAGS.overwrite:
        raise ValueError(
            f"--output_dir={FLAGS.output_dir} is not empty: pass --overwrite to replace the "
            "export there"
        )
    processor = classifier_utils.get_processor(FLAGS.task_name) if FLAGS.task_name else None
    net_config = modeling.ModelConfig.init_from_json(
        os.path.join(FLAGS.model_dir, "net_config.json")
    )
    checkpoint = _checkpoint()
    cls_scope = FLAGS.cls_scope
    if cls_scope is None and processor is not None and FLAGS.head in ("auto", "classification"):
        cls_scope = processor.name
    plan, tensors = export_hf_utils.export(
        checkpoint,
        net_config,
        _tokenizer(),
        FLAGS.output_dir,
        FLAGS.head,
        cls_scope,
        FLAGS.base_model,
        FLAGS.truncate_seq,
        processor.labels if processor is not None else None,
        processor is not None and processor.is_regression,
    )
    groups = sorted({"/".join(n.split("/")[:2]) for n in plan.left_out})
    if groups:
        logging.info(
            "Left out %d checkpoint variables, under: %s", len(plan.left_out), ", ".join(groups)
        )
    logging.info(
        "Wrote %s (%d tensors) of %s to %s.",
        plan.architecture,
        len(tensors),
        checkpoint,
        FLAGS.output_dir,
    )


def main(_):
    data_utils.run_main(_run, FLAGS.verbose)


if __name__ == "__main__":
    app.run(main)
