"""The model and the recipe from the command line: one option per GPTConfig field
(`--n-layer 6 --d-model 384 --mlp gelu ...`) and per TrainConfig field (`--batch-size --lr
--warmup --eval-every ...`), and `--config FILE` (JSON or TOML) holding any of those fields by
their Python names. A preset supplies the rest; the file overrides the preset and the options
override the file."""
import argparse
import dataclasses
import inspect
import json
import re
import tomllib
import types
import typing
from pathlib import Path

from gptcore.model.config import GPTConfig
from gptcore.training.args import POSITIVE_INT, float_above, int_at_least

# fields the command line does not set this way: the tokenizer decides vocab_size, extra is
# metadata, and these recipe fields have options of their own in `gptcore train`
SKIPPED = {"vocab_size", "extra", "steps", "time_budget", "threads", "seed", "keep",
           "checkpoint_every", "checkpoint_minutes", "lr_scales"}
# options whose values have a floor (argparse refuses the rest before any work)
FLOORS = {"block_size": POSITIVE_INT, "n_layer": POSITIVE_INT, "d_model": POSITIVE_INT,
          "n_head": POSITIVE_INT, "n_kv_head": POSITIVE_INT, "head_dim": POSITIVE_INT,
          "d_ff": POSITIVE_INT, "n_experts": int_at_least(0), "top_k": POSITIVE_INT,
          "batch_size": POSITIVE_INT, "warmup": int_at_least(0), "eval_every": POSITIVE_INT,
          "grad_accum": POSITIVE_INT, "lr": float_above(0), "eps": float_above(0),
          "weight_decay": float_above(0, inclusive=True),
          "grad_clip": float_above(0, inclusive=True),
          "min_lr_ratio": float_above(0, inclusive=True)}
CHOICES = {"mlp": ("relu", "gelu", "swiglu"), "pos": ("learned", "rope"),
           "moe_scoring": ("softmax", "topk_softmax", "sigmoid"),
           "moe_activation": ("silu", "gelu", "gpt_oss"),
           "schedule": ("cosine", "linear", "constant")}


def boolean(text):
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _optional(parse):
    def optional(text):
        return None if text.lower() == "none" else parse(text)
    optional.__name__ = parse.__name__
    return optional


def _tuple_of(parse):
    """A comma-separated list: "0.9,0.99" -> (0.9, 0.99); "none" entries -> None."""
    def parse_tuple(text):
        return tuple(None if part.strip().lower() == "none" else parse(part)
                     for part in text.split(",") if part.strip())
    parse_tuple.__name__ = "comma-separated list"
    return parse_tuple


def _parser_for(name, annotation):
    """The argparse type of a dataclass field with this annotation."""
    args = typing.get_args(annotation)
    if isinstance(annotation, types.UnionType) and type(None) in args:
        inner = next(a for a in args if a is not type(None))
        return _optional(FLOORS.get(name) or inner)
    if annotation is tuple:
        return _tuple_of(float if name == "betas" else int)
    if annotation is bool:
        return boolean
    return FLOORS.get(name) or annotation


def settable_fields(cls):
    return [f for f in dataclasses.fields(cls) if f.name not in SKIPPED]


def add_options(parser, cls, title):
    """One `--field-name` option per settable field of dataclass `cls`, defaulting to None
    (None: the preset's value)."""
    group = parser.add_argument_group(title)
    # each field's help is its comment in the dataclass's source: one description, one place
    comments = dict(re.findall(r"^\s+(\w+):[^#\n]*#\s*(.*)$", inspect.getsource(cls), re.M))
    for f in settable_fields(cls):
        option = "--" + f.name.replace("_", "-")
        group.add_argument(option, dest=f.name, type=_parser_for(f.name, f.type), default=None,
                           choices=CHOICES.get(f.name), metavar="X",
                           help=comments.get(f.name, "").replace("%", "%%"))


def read_config_file(path, argument="--config"):
    """The dict a JSON (.json) or TOML (any other name) file holds; a [model] / [train] table
    layout and a flat one are both accepted (flattened here)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{argument}: expected a JSON or TOML file, got {str(path)!r}, which "
                         f"{'is a directory' if path.is_dir() else 'does not exist'}")
    try:
        text = path.read_text()
        values = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, UnicodeDecodeError) as err:
        kind = "JSON" if path.suffix == ".json" else "TOML"
        raise ValueError(f"{argument}: expected {kind}, got {str(path)!r} ({err})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{argument}: expected an object of field: value, got "
                         f"{type(values).__name__} in {str(path)!r}")
    flat = {}
    for key, value in values.items():
        if key in ("model", "train") and isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return flat


def split_overrides(args, recipe_cls, config_file=None):
    """(model overrides, recipe overrides): the --config file's fields, then the options that
    were given. ValueError naming the file's unknown field or wrong-typed value."""
    model_fields = {f.name: f for f in settable_fields(GPTConfig)}
    recipe_fields = {f.name: f for f in settable_fields(recipe_cls)}
    model, recipe = {}, {}
    for key, value in (read_config_file(config_file) if config_file else {}).items():
        fields = model_fields if key in model_fields else recipe_fields
        if key not in fields:
            known = sorted(set(model_fields) | set(recipe_fields))
            raise ValueError(f"--config: expected fields among {', '.join(known)}, got {key!r}")
        try:
            value = _from_file(key, fields[key].type, value)
        except (argparse.ArgumentTypeError, TypeError, ValueError) as err:
            raise ValueError(f"--config: expected a valid {key} in {config_file}, got "
                             f"{value!r} ({err})") from None
        (model if fields is model_fields else recipe)[key] = value
    for name in model_fields:
        if getattr(args, name, None) is not None:
            model[name] = getattr(args, name)
    for name in recipe_fields:
        if getattr(args, name, None) is not None:
            recipe[name] = getattr(args, name)
    return model, recipe


def _from_file(name, annotation, value):
    """A value read from JSON/TOML checked as the option's parser would check its text."""
    if isinstance(value, list):
        value = ",".join("none" if v is None else str(v) for v in value)
    if isinstance(value, bool):
        value = str(value).lower()
    if name in CHOICES and value not in CHOICES[name]:
        raise ValueError(f"expected one of {', '.join(CHOICES[name])}, got {value!r}")
    return _parser_for(name, annotation)("none" if value is None else str(value))
