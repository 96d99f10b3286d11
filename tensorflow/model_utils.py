"""Name-based checkpoints in the original format.

The released Funnel-Transformer checkpoints are TF1 name-based checkpoints: `tf.train.list_variables` shows
`model/encoder/layer_0/rel_attn/q/kernel`, `global_step`, `.../adam_m`. A TF2 object checkpoint would show
object paths instead, so we write with the `SaveV2` op directly, under exactly those names, and read with
`tf.train.load_checkpoint`. A checkpoint becomes visible (in the `checkpoint` state file) only after all its
files are written.
"""

import dataclasses
import json
import os
import re

import tensorflow as tf
from absl import logging

import data_utils

_CKPT_STEP_RE = re.compile(r"-(\d+)$")
# The training state a checkpoint holds besides the model: the step counter, Adam's slots and the float16
# loss scale. A warm start that does not use them skips them quietly; exports leave them out.
TRAINING_STATE_RE = re.compile(r"^global_step$|/adam_[mv]$|^loss_scale/")


def _variable_name(var):
    return var.name.split(":")[0]


def collect_variables(objects):
    """Maps checkpoint names to variables.

    Args:
      objects: a module with `named_variables()`, a `tf.Variable`, or a list of them.
    Returns:
      dict name -> tf.Variable. Two different variables under one name raise ValueError.
    """
    if not isinstance(objects, (list, tuple)):
        objects = [objects]
    named = {}
    for obj in objects:
        items = (
            {_variable_name(obj): obj}.items()
            if isinstance(obj, tf.Variable)
            else obj.named_variables().items()
        )
        for name, var in items:
            if name in named and named[name] is not var:
                raise ValueError(f"two different variables are named {name}")
            named[name] = var
    return named


def checkpoint_step(path):
    """The global step encoded in a checkpoint prefix like `model.ckpt-1000`, or None."""
    match = _CKPT_STEP_RE.search(str(path))
    return int(match.group(1)) if match else None


def list_checkpoints(model_dir):
    """Checkpoint prefixes recorded in `model_dir/checkpoint`, oldest first (empty when none)."""
    state = tf.train.get_checkpoint_state(model_dir)
    if state is None:
        return []
    paths = [
        p if os.path.isabs(p) or "://" in p else os.path.join(model_dir, p)
        for p in state.all_model_checkpoint_paths
    ]
    return [p for p in paths if tf.io.gfile.exists(p + ".index")]


def latest_checkpoint(model_dir):
    """The newest complete checkpoint in `model_dir`, or None."""
    checkpoints = list_checkpoints(model_dir)
    return checkpoints[-1] if checkpoints else None


def _newest_prefix(prefixes, where):
    """The prefix of the highest step among `prefixes`, the only one, or None when there are none."""
    stepped = [p for p in prefixes if checkpoint_step(p) is not None]
    if stepped:
        return max(stepped, key=checkpoint_step)
    if len(prefixes) > 1:
        names = ", ".join(sorted(os.path.basename(p) for p in prefixes))
        raise ValueError(f"{where} holds several checkpoints ({names}): name one")
    return prefixes[0] if prefixes else None


def resolve_checkpoint(path):
    """A checkpoint prefix from a prefix, a directory, or `<dir>/latest` (the original's convention).

    A directory gives the newest checkpoint its `checkpoint` state file lists, else (a released model's
    directory has none) its checkpoint files: the highest step, or the only one. A prefix without its
    step (`.../model.ckpt` for `model.ckpt-NNNN`) gives the highest step.
    """
    if os.path.basename(path) == "latest" and not tf.io.gfile.exists(path + ".index"):
        path = os.path.dirname(path)
    if tf.io.gfile.isdir(path):
        found = latest_checkpoint(path) or tf.train.latest_checkpoint(path)
        if found is None:
            prefixes = [
                p[: -len(".index")] for p in tf.io.gfile.glob(os.path.join(path, "*.index"))
            ]
            found = _newest_prefix(prefixes, f"directory {path}")
        if found is None:
            raise ValueError(f"no checkpoint found in directory {path}")
        return found
    if tf.io.gfile.exists(path + ".index"):
        return path
    # `.../model.ckpt` when the files are `model.ckpt-NNNN.*`: take the highest step.
    stepped = [p[: -len(".index")] for p in tf.io.gfile.glob(path + "-*.index")]
    stepped = [p for p in stepped if checkpoint_step(p) is not None]
    if stepped:
        return max(stepped, key=checkpoint_step)
    raise ValueError(f"checkpoint {path} does not exist (no {path}.index)")


def best_or_latest_checkpoint(model_dir):
    """The checkpoint `model_dir/best_result.json` names while it exists, else the latest in `model_dir`:
    what a finetuning run leaves to export."""
    best_path = os.path.join(model_dir, "best_result.json")
    if tf.io.gfile.exists(best_path):
        with tf.io.gfile.GFile(best_path) as f:
            best = json.load(f).get("path")
        if best and tf.io.gfile.exists(best + ".index"):
            logging.info("The best checkpoint of %s: %s.", best_path, best)
            return best
    return resolve_checkpoint(model_dir)


def _write_checkpoint(tensors, path, max_to_keep=0):
    """Writes `tensors` (name -> tensor) at prefix `path`, then records it in the directory's state file.

    Readers find checkpoints through the state file, so one is never picked up before all its files exist.
    """
    names = sorted(tensors)
    model_dir = os.path.dirname(path) or "."
    try:
        tf.io.gfile.makedirs(model_dir)
        tf.raw_ops.SaveV2(
            prefix=path,
            tensor_names=names,
            shape_and_slices=[""] * len(names),
            tensors=[tensors[n] for n in names],
        )
    except (tf.errors.OpError, OSError) as e:
        # Not recorded in the state file: the previous checkpoint stays the latest.
        for filename in tf.io.gfile.glob(path + ".*"):
            tf.io.gfile.remove(filename)
        raise OSError(f"cannot write checkpoint {path} in {model_dir}: {_message(e)}") from e
    kept = [p for p in list_checkpoints(model_dir) if p != path] + [path]
    if max_to_keep and len(kept) > max_to_keep:
        for old in kept[:-max_to_keep]:
            for filename in tf.io.gfile.glob(old + ".*"):
                tf.io.gfile.remove(filename)
        kept = kept[-max_to_keep:]
    # The text format of CheckpointState, as TF1's Saver wrote it.
    lines = [f'model_checkpoint_path: "{os.path.basename(path)}"']
    lines += [f'all_model_checkpoint_paths: "{os.path.basename(p)}"' for p in kept]
    data_utils.atomic_write_text(os.path.join(model_dir, "checkpoint"), "\n".join(lines) + "\n")
    return path


def save_checkpoint(objects, path, max_to_keep=0):
    """Writes every variable of `objects` under its original name and records it in the state file.

    Args:
      objects: see `collect_variables`; include the `global_step` variable to make a resumable checkpoint.
      path: checkpoint prefix, e.g. `model_dir/model.ckpt-1000`.
      max_to_keep: keep at most this many checkpoints listed in the state file (0 = keep all); older ones
        are deleted.
    Returns:
      `path`.
    """
    named = collect_variables(objects)
    return _write_checkpoint({n: v.read_value() for n, v in named.items()}, path, max_to_keep)


class DamagedCheckpointError(ValueError):
    """A checkpoint whose files cannot be read whole (e.g. a truncated `.data` file)."""


class CheckpointValues:
    """The variables of one name-based checkpoint, read on demand by name.

    Args:
      path: a checkpoint prefix (see `resolve_checkpoint` for the other forms).
    """

    def __init__(self, path):
        self.path = path
        try:
            self._reader = tf.train.load_checkpoint(path)
        except (tf.errors.OpError, ValueError) as e:
            raise DamagedCheckpointError(
                f"checkpoint {path} cannot be read: {_message(e)}"
            ) from None
        self.shapes = self._reader.get_variable_to_shape_map()

    def get(self, name, shape):
        """The value of `name` as numpy, None when the checkpoint lacks it.

        Raises:
          ValueError: the checkpoint's shape differs from `shape` (naming both).
        """
        if name not in self.shapes:
            return None
        if list(self.shapes[name]) != list(shape):
            raise ValueError(
                f"checkpoint {self.path}: variable {name} has shape {self.shapes[name]} in the "
                f"checkpoint but {list(shape)} in the model (does the model config match the "
                "checkpoint?)"
            )
        try:
            return self._reader.get_tensor(name)
        except (IndexError, tf.errors.OpError) as e:
            raise DamagedCheckpointError(
                f"checkpoint {self.path} is damaged (variable {name}: {_message(e)}); its files may "
                "have been cut short by a full disk or a killed copy"
            ) from None


def _message(error):
    return error.message if isinstance(error, tf.errors.OpError) else str(error)


@dataclasses.dataclass
class InitReport:
    """What `init_from_checkpoint` did.

    Attributes:
      loaded: checkpoint names loaded into existing variables.
      missing: model variable names absent from the checkpoint (they keep their initial values).
      unused: checkpoint names no existing variable has.
      deferred: those of `unused` under a model's scope: restored when the model creates them (a head
        first called after the load), as TF2's deferred restoration does.
    """

    loaded: list
    missing: list
    unused: list
    deferred: list


def pretrained_part(name):
    """`{scope}/{part}` of a variable name whose part is one a pretrained checkpoint provides (`input`,
    `encoder`, `decoder`), else None (a task head, the optimizer's state)."""
    parts = name.split("/")
    if len(parts) > 2 and parts[1] in ("input", "encoder", "decoder"):
        return "/".join(parts[:2])
    return None


def warn_randomly_initialised(names, path):
    """Warns once per pretrained part (`pretrained_part`) of `names`, variables not in checkpoint `path`:
    they train from scratch (a decoder, say, after loading a core-only or finetuned checkpoint)."""
    for part in sorted({pretrained_part(n) for n in names} - {None}):
        logging.warning("%s is not in %s: its variables are initialised randomly", part, path)


def init_from_checkpoint(objects, init_checkpoint, trainable_only=False):
    """Loads a name-based checkpoint into `objects` by variable name (the original warm start).

    Model variables absent from the checkpoint keep their initial values; checkpoint variables absent from the
    model are skipped (logged, except optimizer slots and global_step). A model (`FunnelTFM`) among `objects`
    also restores from this checkpoint every variable it creates later, so the order of loading and first
    calls does not matter.

    Args:
      objects: see `collect_variables`.
      init_checkpoint: checkpoint prefix, directory, or `<dir>/latest`.
      trainable_only: restore only trainable variables (the finetuning default, --init_global_vars=False).
    Returns:
      InitReport.
    Raises:
      ValueError: a variable's shape differs from the checkpoint's (naming both shapes).
    """
    if not isinstance(objects, (list, tuple)):
        objects = [objects]
    path = resolve_checkpoint(init_checkpoint)
    values = CheckpointValues(path)
    named = collect_variables(objects)
    if trainable_only:
        named = {n: v for n, v in named.items() if v.trainable}
    loaded, missing = [], []
    for name, var in sorted(named.items()):
        value = values.get(name, var.shape.as_list())
        if value is None:
            missing.append(name)
            continue
        var.assign(tf.cast(value, var.dtype))
        loaded.append(name)
    unused = sorted(set(values.shapes) - set(named))
    models = [o for o in objects if hasattr(o, "restore_on_creation")]
    for model in models:
        model.restore_on_creation(values)
    deferred = [n for n in unused if any(n.startswith(f"{m.scope}/") for m in models)]
    logging.info("Loaded %d variables from %s", len(loaded), path)
    for name in missing:
        logging.info("Not in checkpoint, kept initial value: %s", name)
    warn_randomly_initialised(missing, path)
    reported = [n for n in unused if not TRAINING_STATE_RE.search(n)]
    if reported:
        groups = sorted({"/".join(n.split("/")[:3]) for n in reported})
        logging.info(
            "%d checkpoint variables not used by the model so far (%d restored if the model creates "
            "them), under: %s",
            len(reported),
            len(deferred),
            ", ".join(groups),
        )
    return InitReport(loaded, missing, unused, deferred)


def export_core_checkpoint(src_checkpoint, dst_path):
    """Writes a "core-only" copy of a checkpoint: no training state (`TRAINING_STATE_RE`), no generator.

    This is the role of the original `modify_ckpt.py --finetune_only`.
    Returns:
      The list of names written.
    """
    path = resolve_checkpoint(src_checkpoint)
    if os.path.abspath(os.path.dirname(dst_path)) == os.path.abspath(os.path.dirname(path)):
        # Beside the source, the export would become the directory's latest checkpoint: a resumed
        # training run would restart from it, without optimizer state or generator.
        raise ValueError(
            f"--tgt_ckpt={dst_path} is in the directory of the source checkpoint {path}: export "
            "into another directory"
        )
    reader = tf.train.load_checkpoint(path)
    names = sorted(
        name
        for name in reader.get_variable_to_shape_map()
        if not (TRAINING_STATE_RE.search(name) or name.startswith("generator/"))
    )
    if not names:
        raise ValueError(f"checkpoint {path} holds no core model variables")
    _write_checkpoint({n: tf.constant(reader.get_tensor(n)) for n in names}, dst_path)
    return names
