"""Exports a "core-only" checkpoint from a full pretraining checkpoint, for finetuning.

    python tensorflow/modify_ckpt.py --src_ckpt=exp/pretrain --tgt_ckpt=exp/core/model.ckpt

drops the optimizer slots (`*/adam_m`, `*/adam_v`), the ELECTRA generator (`generator/*`),
`global_step` and a float16 run's loss scale (`loss_scale/*`), keeping the discriminator (`model/*`,
including its pretraining heads), as the original `modify_ckpt.py --finetune_only` did. The released
"-ELEC-TF" checkpoints are of this kind.
"""

import startup  # noqa: F401 (first: TensorFlow's start-up lines stay off the console)

# isort: split
from absl import app, flags, logging

import data_utils
import model_utils

flags.DEFINE_string(
    "src_ckpt", "", "Checkpoint to read: prefix, directory (latest) or <dir>/latest."
)
flags.DEFINE_string("tgt_ckpt", "", "Prefix of the checkpoint to write, e.g. exp/core/model.ckpt.")
flags.DEFINE_bool(
    "finetune_only",
    True,
    "Drop optimizer slots, the generator and global_step (the only mode; checkpoints written by "
    "pretrain.py already use the current variable names, so no renaming is needed).",
)

FLAGS = flags.FLAGS


def main(_):
    data_utils.run_main(_run)


def _run():
    if not FLAGS.src_ckpt or not FLAGS.tgt_ckpt:
        raise ValueError("--src_ckpt and --tgt_ckpt are required")
    if not FLAGS.finetune_only:
        raise ValueError(
            "--finetune_only=False: this script only exports core-only checkpoints; a full "
            "checkpoint is used as it is"
        )
    names = model_utils.export_core_checkpoint(FLAGS.src_ckpt, FLAGS.tgt_ckpt)
    logging.info("Wrote %d variables to %s", len(names), FLAGS.tgt_ckpt)


if __name__ == "__main__":
    app.run(main)
