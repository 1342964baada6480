"""The catalogue: every config key, method option, dataset option and metric, declared once.

Everything else is derived from these tables: `nccore.config.validate_config`, the methods'
option defaults and checks, the trial's row columns and their Parquet schema (`row_schema`,
`SCHEMA_VERSION`), the metrics reported to Ray Tune (`reported_metrics`), the spec validator
(`sweeps.spec`), `ncsweep keys` / `ncsweep validate --explain KEY`, and docs/spec.md.

Representation. Frozen dataclasses (`Key`, `Metric`) in plain dicts. Why: the catalogue must load
before torch or Ray (the validator runs first, and fast), so it imports only the standard library;
a frozen dataclass is data a tool can print and check (like `Metric.higher_is_better` in
torchmetrics), its fields are type-annotated and documented here, and a dict keyed by name is
the registry. pydantic would add a dependency and a second vocabulary for the same few checks;
the checks here are one function, `check_value`, over the fields below.

How to declare
- A config key (a key of the trial config, settable in a spec's `base` and, if `sweepable`, in
  `space`): add `_key("name", "float", default, "one-line meaning", unit=..., low=..., high=...)`
  to `CONFIG`. Set `axis=True` when analyses should treat it as a factor when a run sweeps it
  (it then also becomes a column of every row). Keys the runner sets itself: `reserved=True`.
- A method: a `MethodInfo` in `METHOD_INFO` with its options (`Key`s; `METHOD_OPTIONS` is derived,
  and the trial config's `method` choices are its keys), its `family` ("tuning", "transfer":
  `methods_in`) and whether it is `fusable`. The method class reads its defaults with
  `method_defaults(name)`.
- A dataset option (`dataset.options` of a spec): add a `Key` to `DATASET_OPTIONS[dataset]`
  (`COMMON_DATASET_OPTIONS` apply to every dataset); `build_dataset` fills in the defaults
  (`dataset_defaults`). `determines=("model",)` on an option that changes the model's shapes.
  Files a file dataset needs below its `root` go in `DATASET_FILES`.
- A metric (a row column produced by `nccore.evaluate` or a method's `end_of_epoch`): add a
  `Metric` to `METRICS` with its scope, direction, unit, meaning and source. `reported=True`
  sends it to Ray Tune (so schedulers/searchers can use it); `metric_set` / `methods` say when
  a trial produces it; `by_group` and `curve` where the analysis tables it per subgroup and the
  report draws it per epoch.
- A row column that is none of these: a `RowField` in `ROW_FIELDS` (`kind` "host" or "time" where
  it says where a trial ran or when a row was written).

Scopes of a metric: "split" — one value per split on the split's "all" row (reported to Tune as
`<split>_<name>`); "split+group" — also on every subgroup row; "group" — only on subgroup rows;
"trial" — one value per trial and epoch, repeated on that epoch's rows (reported as
`<split>_<name>` for every split, same value, except `train_loss` which is reported as is).
"""
from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 2          # of the row Parquet files; bump when a row column changes meaning or type
SPLITS = ("train", "val", "test")
ARCH_FAMILIES = {"resnet18": "resnet", "resnet34": "resnet", "densenet121": "densenet", "vgg11": "vgg",
                 "vgg16": "vgg"}
METRIC_SETS = ("nc", "fairness", "gc", "fine", "saliency")
TRAIN_GEOMETRY_SETS = ("nc", "gc")   # metric sets about the geometry training shaped: read on the train split
TYPES = ("int", "float", "bool", "str", "path", "list[str]", "list[float]", "mapping")
# "Learned nothing": validation accuracy within this margin of the majority-class rate.
LEARNED_NOTHING_MARGIN = 0.02
MAX_PLANNED_TRIALS = 100_000   # `ncsweep validate/run` refuse larger plans unless --allow-large


@dataclass(frozen=True)
class Key:
    """One setting. `type` is one of TYPES; `low`/`high` bound numbers (and list items), open
    when `low_open`/`high_open`; `choices` lists the allowed values; `nullable` allows null."""
    name: str
    type: str
    default: Any
    help: str
    unit: str = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple | None = None
    nullable: bool = False
    required: bool = False
    used_by: tuple = ()            # methods / datasets that read it; () = all
    axis: bool = False             # an analysis factor (and row column) when swept
    condition: bool = False        # a data condition (what the data is, not how it is learned): model
                                   # selection ranks configurations within each of its values
    sweepable: bool = True         # may appear in a spec's `space`
    reserved: bool = False         # set by the runner; refused in a spec
    in_id: bool = True             # part of the trial id
    id_if_set: bool = False        # in the trial id only when not at its default (a key added after
                                   # trials were run: their ids, and so their resume, stay the same)
    determines: tuple = ()         # what the key decides beyond its trial: "data" (the dataset a trial
                                   # builds: fused members share one copy), "base" (a tuning method's
                                   # pre-trained base model, cached and shared by the configs that agree),
                                   # "model" (the model's parameter shapes: a checkpoint fits a trial
                                   # only if they agree; dataset options declare it too, as data.<name>)
    fuse_axis: bool = False        # fused configurations may differ in it (docs/fused.md)
    aliases: tuple = ()            # common misspellings, for did-you-mean
    item: str = "entry"            # what a list entry is, for messages
    per_method: dict = field(default_factory=dict, hash=False)     # method -> what the value means
    method_range: dict = field(default_factory=dict, hash=False)   # method -> (low, high) overriding

    def allowed(self, method: str | None = None) -> str:
        """Human description of the accepted values."""
        if self.choices is not None and self.type == "list[str]":
            s = f"a list of {self.item}s from " + ", ".join(repr(c) for c in self.choices)
        elif self.choices is not None:
            s = "choose one of " + ", ".join(repr(c) for c in self.choices)
        elif self.type in ("int", "float", "list[float]"):
            lo, hi = self.method_range.get(method, (self.low, self.high))
            what = {"int": "an integer", "float": "a finite number", "list[float]": "a list of finite numbers"}[self.type]
            if self.type == "int" and lo == 1 and hi is None:
                return "a positive integer" + (" (or null)" if self.nullable else "")
            if lo is not None and hi is not None:
                s = f"{what} in {'(' if self.low_open else '['}{lo}, {hi}{')' if self.high_open else ']'}"
            else:
                parts = ([f"{'>' if self.low_open else '>='} {lo}"] if lo is not None else []) + \
                        ([f"{'<' if self.high_open else '<='} {hi}"] if hi is not None else [])
                s = what + (" " + " and ".join(parts) if parts else "")
        else:
            s = {"bool": "true or false", "str": "a string", "path": "a local file path",
                 "list[str]": "a list of strings", "mapping": "a mapping"}[self.type]
        return s + (" (or null)" if self.nullable else "")

    def explain(self) -> str:
        """Multi-line description for `ncsweep keys` / `validate --explain`."""
        lines = [f"{self.name}: {self.help}", f"  type: {self.type}", f"  default: {self.default!r}",
                 f"  accepted: {self.allowed()}"]
        if self.unit:
            lines.append(f"  unit: {self.unit}")
        if self.used_by:
            lines.append(f"  used by: {', '.join(self.used_by)}")
        for m, meaning in self.per_method.items():
            lines.append(f"  for method {m}: {meaning}")
        if self.aliases:
            lines.append(f"  also accepted as a typo of: {', '.join(self.aliases)}")
        flags = [f for f, on in (("analysis axis", self.axis), ("sweepable", self.sweepable and not self.reserved),
                                 ("reserved (set by ncsweep)", self.reserved)) if on]
        if flags:
            lines.append(f"  {'; '.join(flags)}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Metric:
    """One row column a trial produces. scope: split | split+group | group | trial (module doc).
    higher_is_better: True, False, or None (no direction: a diagnostic)."""
    name: str
    scope: str
    higher_is_better: bool | None
    meaning: str
    unit: str = ""
    source: str = ""
    dtype: str = "float"           # float | int | bool | str
    metric_set: str | None = None  # the `metrics` entry that enables it (None: always)
    methods: tuple = ()            # methods that produce it; () = all
    splits: tuple = SPLITS         # splits whose rows carry it
    reported: bool = False         # sent to Ray Tune
    every_epoch: bool = True       # False: only on the final epoch (an early-stopping scheduler cannot use it)
    by_group: bool = False         # the analysis also tabulates its per-subgroup columns (<split>_<name>_g<id>;
                                   # a scope with subgroup rows)
    curve: int = 0                 # its place among the report's per-epoch curves (0: not drawn); drawn on
                                   # its primary split, per subgroup when its scope has subgroup rows

    @property
    def primary_split(self) -> str:
        """The split the analysis tabulates and draws it on: train for TRAIN_GEOMETRY_SETS, test
        otherwise; its last split when it has no row there."""
        split = "train" if self.metric_set in TRAIN_GEOMETRY_SETS else "test"
        return split if split in self.splits else self.splits[-1]


def _key(name, type_, default, help_, **kw) -> Key:
    return Key(name, type_, default, help_, **kw)


def _num(name, type_, default, help_, low=None, high=None, **kw) -> Key:
    return Key(name, type_, default, help_, low=low, high=high, **kw)


# --------------------------------------------------------------------------- method options
_TUNING = {
    "pretrain_epochs": _num("pretrain_epochs", "int", 5, "ERM epochs that train the base model (ignored with "
                            "init_from)", low=0, unit="epochs"),
    "pretrain_lr": _num("pretrain_lr", "float", 0.05, "learning rate of the base model's ERM pre-training",
                        low=0.0, low_open=True),
    "n_tune": _num("n_tune", "int", 8, "bias-contradicting training samples per bias-contradicting group in "
                   "the tuning set", low=1, unit="samples"),
    "n_ordinary": _num("n_ordinary", "int", None, "ordinary (bias-aligned) samples per bias-aligned group mixed "
                       "into the tuning set (null: n_tune)", low=0, nullable=True, unit="samples"),
    "early_stop": _key("early_stop", "bool", True, "stop tuning early (criterion: stop_on)"),
    "stop_on": _key("stop_on", "str", "val", "early-stopping criterion: val worst-group accuracy with patience, "
                    "best epoch restored; or tune: every tuning sample correct", choices=("val", "tune")),
    "patience": _num("patience", "int", 3, "epochs without a better val worst-group accuracy before stopping",
                     low=1, unit="epochs"),
}
_TRANSFER = {
    "n_source": _num("n_source", "int", 5, "classes used for pre-training (the first ones); the rest are "
                     "held-out targets", low=2),
    "target_arm": _key("target_arm", "str", "first", "which classes are source and which targets. first: the "
                       "first n_source classes are source, the rest targets; compatible / incompatible read the "
                       "dataset's coarse families (BiasedShapes fine: shape pairs such as disk|ring) and score the "
                       "same targets, the second class of each of the first n_target families; compatible = the "
                       "targets' siblings in the source (filled up to n_source from families without a target); "
                       "incompatible = n_source classes of families without a target, one per family in turn",
                       choices=("first", "compatible", "incompatible")),
    "n_target": _num("n_target", "int", 0, "target classes of the compatible / incompatible arms (0: n_source)",
                     low=0),
    "n_way": _num("n_way", "int", 5, "classes per few-shot episode", low=2),
    "k_shot": _num("k_shot", "int", 5, "support images per class (1-shot is always reported too)", low=1),
    "queries": _num("queries", "int", 15, "query images per class and episode", low=1),
    "episodes": _num("episodes", "int", 600, "few-shot episodes averaged", low=1),
}


@dataclass(frozen=True)
class MethodInfo:
    """One training method: its options, and what the rest of the system derives from it.
    family: "tuning" (fine-tunes a cached ERM base model on a small tuning set: Key.determines
    "base"; the tuning metrics) or "transfer" (pre-trains on source classes, scored few-shot on
    held-out target classes: the transfer metrics, metric set gc); "" otherwise.
    fusable: it trains with the plain ERM loop, so `nccore.fused` may train it in a fused group."""
    options: dict = field(default_factory=dict, hash=False)    # option name -> Key
    family: str = ""
    fusable: bool = False


METHOD_FAMILIES = ("tuning", "transfer")
METHOD_INFO: dict[str, MethodInfo] = {
    "erm": MethodInfo(fusable=True),
    "dfr": MethodInfo({
        "n_refits": _num("n_refits", "int", 20, "final L1 logistic-regression fits averaged (each on a fresh "
                         "group-balanced subsample of val)", low=1),
        "Cs": _num("Cs", "list[float]", [1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01], "inverse L1 strengths tried; "
                   "chosen by worst-group accuracy on half of val", low=0.0, low_open=True),
        "head": _key("head", "str", "l1", "penalty of the refitted last layer (l2: the study's control)",
                     choices=("l1", "l2")),
        "balance": _key("balance", "bool", True, "fit on group-balanced val subsets (false: the study's control)"),
    }),
    "groupdro": MethodInfo({
        "eta": _num("eta", "float", 0.01, "step size η of the exponentiated-gradient group weights "
                    "q ∝ q·exp(η·L_g) (Sagawa et al., ICLR 2020)", low=0.0),
    }),
    "jtt": MethodInfo({
        "id_epochs": _num("id_epochs", "int", 1, "ERM epochs of the identification run whose training errors are "
                          "upsampled (Liu et al., ICML 2021)", low=1, unit="epochs"),
        "upweight": _num("upweight", "int", 20, "λ_up: copies of each error-set sample in the second run's "
                         "training set (1: plain ERM)", low=1),
    }),
    "change_penalty": MethodInfo({
        **_TUNING,
        "penalty_mode": _key("penalty_mode", "str", "proximal", "how λ acts: proximal step after each "
                             "optimiser step, or explicit term in the loss", choices=("proximal", "explicit")),
        "norm": _key("norm", "str", "l2", "norm of the change Δ: squared L2 or L1", choices=("l2", "l1")),
    }, family="tuning"),
    "mas": MethodInfo({
        **_TUNING,
        "mas_samples": _num("mas_samples", "int", 256, "training images used to estimate the importance Ω",
                            low=1, unit="samples"),
        "batchwise": _key("batchwise", "bool", False, "accumulate |batch gradient| (the official code) instead "
                          "of exact per-sample gradients"),
        "penalty_mode": _key("penalty_mode", "str", "explicit", "how λ acts: explicit term in the loss (the "
                             "published form; diverges once 2·lr·λ·max Ω > 2), or its exact proximal step "
                             "θ ← θ* + (θ − θ*)/(1 + 2·lr·λ·Ω) after each optimiser step (stable at any λ)",
                             choices=("explicit", "proximal")),
    }, family="tuning"),
    "side_tuning": MethodInfo(dict(_TUNING), family="tuning"),
    "transfer": MethodInfo(dict(_TRANSFER), family="transfer"),
    "gc_reg": MethodInfo(dict(_TRANSFER), family="transfer"),   # same protocol; `penalty` = GC strength λ
    "untrained": MethodInfo(),   # baseline: random init, BatchNorm statistics only (no step)
}
METHOD_OPTIONS: dict[str, dict[str, Key]] = {m: info.options for m, info in METHOD_INFO.items()}


def methods_in(family: str) -> tuple[str, ...]:
    """The methods of a family ("tuning" or "transfer", see MethodInfo), in declaration order."""
    if family not in METHOD_FAMILIES:
        raise ValueError(f"unknown method family {family!r}: use one of {', '.join(METHOD_FAMILIES)}")
    return tuple(m for m, info in METHOD_INFO.items() if info.family == family)


def fusable_methods() -> tuple[str, ...]:
    """The methods `nccore.fused` may train in a fused group (MethodInfo.fusable)."""
    return tuple(m for m, info in METHOD_INFO.items() if info.fusable)


# --------------------------------------------------------------------------- dataset options
COMMON_DATASET_OPTIONS: dict[str, Key] = {
    "n_train": _num("n_train", "int", None, "training images (BiasedShapes: generated; others: the first "
                    "n_train after shuffling)", low=1, nullable=True, unit="images"),
    "val_fraction": _num("val_fraction", "float", 0.1, "share of train carved out as val when the dataset "
                         "has no val split", low=0.0, high=1.0, low_open=True, high_open=True),
    "spurious_bias": _num("spurious_bias", "float", 0.0, "β of the spurious attribute when bias_kind=label "
                          "(bias_level is then the label-flip rate)", low=0.0, high=1.0),
}
_IMAGE = lambda d: _num("image_size", "int", d, "side of the square images", low=8, unit="px",  # noqa: E731
                        determines=("model",))
_TEST_BIAS = _num("test_bias", "float", 0.0, "β of the test split (0: balanced groups)", low=0.0, high=1.0)
_ROOT = _key("root", "path", None, "local folder holding the dataset's files (nothing is downloaded)",
             required=True)
_TARGET = _key("target", "str", "label", "training target: the dataset's label, or its coarse / fine labels",
               choices=("label", "coarse", "fine"), determines=("model",))
DATASET_OPTIONS: dict[str, dict[str, Key]] = {
    "biased_shapes": {
        "target": _key("target", "str", "binary", "binary (round vs square family), coarse (5) or fine (10 "
                       "shapes)", choices=("binary", "coarse", "fine"), determines=("model",)),
        "n_train": _num("n_train", "int", 2000, "generated training images", low=1, unit="images"),
        "n_val": _num("n_val", "int", 600, "generated validation images", low=1, unit="images"),
        "n_test": _num("n_test", "int", 1000, "generated test images", low=1, unit="images"),
        "image_size": _IMAGE(16),
        "minority_rate": _num("minority_rate", "float", 0.5, "P(a = 1) of the sensitive attribute", low=0.0,
                              high=1.0),
        "separability": _num("separability", "float", 0.5, "how visible a is (foreground luminance 0.5 ± 0.4·σ)",
                             low=0.0, high=1.0),
        "noise": _num("noise", "float", 0.05, "std of Gaussian pixel noise", low=0.0),
        "test_bias": _TEST_BIAS,
    },
    "colored_digits": {
        "target": _key("target", "str", "binary", "binary (digit ≥ 5) or digit (10 classes)",
                       choices=("binary", "digit"), determines=("model",)),
        "image_size": _IMAGE(16),
        "test_bias": _TEST_BIAS,
    },
    "cifar10": {"root": _ROOT, "target": _TARGET,
                "coarse_pairing": _key("coarse_pairing", "str", "mod5", "fine→coarse pairing: f mod 5, or "
                                       "semantic pairs", choices=("mod5", "semantic"))},
    "cifar100": {"root": _ROOT, "target": _TARGET},
    "waterbirds": {"root": _ROOT, "image_size": _IMAGE(64)},
    "celeba": {"root": _ROOT, "image_size": _IMAGE(64),
               "attribute": _key("attribute", "str", "Male", "CelebA attribute used as the spurious/sensitive one"),
               "image_dir": _key("image_dir", "str", "img_align_celeba", "image folder below root"),
               "attr_file": _key("attr_file", "str", "list_attr_celeba.txt", "attribute list below root: the "
                                 "published .txt (count line, names line, rows of -1/1) or a .csv with image_id"),
               "partition_file": _key("partition_file", "str", "list_eval_partition.txt", "split list below root "
                                      "(image, partition 0/1/2): the published .txt or a .csv")},
    "ham10000": {"root": _ROOT, "image_size": _IMAGE(64),
                 "attribute": _key("attribute", "str", "sex", "sensitive attribute a: sex (1 female) or age60 "
                                   "(1: age ≥ 60)", choices=("sex", "age60")),
                 "positive": _key("positive", "str", "mel,bcc,akiec", "comma-separated dx codes of label 1"),
                 "split_seed": _num("split_seed", "int", 0, "seed of the 70/10/20 split of lesions (fixed "
                                    "across trials)", low=0)},
    "image_csv": {"root": _ROOT, "image_size": _IMAGE(64),
                  "csv_name": _key("csv_name", "str", "labels.csv", "CSV below root with columns path, label, "
                                   "group, split")},
}
# Files a file dataset needs below `root` (checked by the spec validator before anything starts).
DATASET_FILES: dict[str, tuple] = {
    "cifar10": tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",),
    "cifar100": ("train", "test"),
    "waterbirds": ("metadata.csv",),
    "celeba": ("{attr_file}", "{partition_file}"),
    "ham10000": ("HAM10000_metadata.csv",),
    "image_csv": ("{csv_name}",),
}

# Class families of a dataset's training target (data option `target`): (families, classes in each).
# The transfer method's compatible / incompatible arms need them; the spec validator refuses those
# arms elsewhere, and checks n_source / n_target against the sizes (nccore.transfer_arms).
CLASS_HIERARCHY: dict[str, dict[str, tuple[int, int]]] = {
    "biased_shapes": {"fine": (5, 2)},                      # disk|ring, square|hollow square, plus|X, ...
    "cifar10": {"label": (5, 2), "fine": (5, 2)},           # coarse_pairing: mod5 or semantic pairs
    "cifar100": {"label": (20, 5), "fine": (20, 5)},        # the 20 superclasses
}

# Datasets whose images carry a pixel mask of the spurious attribute (`Split.spurious_mask`;
# BiasedShapes: the background, whose complement is the object). Saliency findings (the CAM's share
# on the spurious region, the pointing game) can only be measured on these.
SPURIOUS_MASK_DATASETS: tuple[str, ...] = ("biased_shapes",)


def dataset_provides(dataset: str, target: str) -> set[str]:
    """What a dataset with training target `target` provides that some study findings need:
    "spurious_mask" (SPURIOUS_MASK_DATASETS), "class_families" (CLASS_HIERARCHY)."""
    out = {"spurious_mask"} if dataset in SPURIOUS_MASK_DATASETS else set()
    return out | ({"class_families"} if target in CLASS_HIERARCHY.get(dataset, {}) else set())


def provided_by(need: str) -> str:
    """Which datasets (and training targets) provide `need` of `dataset_provides`, for error messages."""
    if need == "class_families":
        return ", ".join(f"{d} with target {'/'.join(t)}" for d, t in CLASS_HIERARCHY.items())
    return ", ".join(SPURIOUS_MASK_DATASETS)


# --------------------------------------------------------------------------- config keys
_K = [
    _key("dataset", "str", "biased_shapes", "dataset registry name (a spec sets it with dataset.name)",
         choices=tuple(DATASET_OPTIONS), sweepable=False, axis=True, condition=True, determines=('base', 'data', 'model')),
    _key("data", "mapping", {}, "dataset options (a spec sets them with dataset.options)", sweepable=False, determines=('base', 'data')),
    _num("bias_level", "float", 0.0, "β of the spurious correlation (bias_kind=spurious), label-flip rate of "
         "positives in subgroup a=1 (bias_kind=label), or the rate at which those positives are dropped "
         "instead (bias_kind=drop: the same imbalance without label noise)", low=0.0, high=1.0, axis=True,
         aliases=("bias",),
         condition=True, determines=('base', 'data'), fuse_axis=True),
    _key("bias_kind", "str", "spurious", "what bias_level controls", choices=("spurious", "label", "drop"), axis=True,
         condition=True, determines=('base', 'data')),
    _key("group_by", "str", "spurious", "attribute of the per-subgroup rows: spurious p or sensitive a",
         choices=("spurious", "sensitive"), axis=True, condition=True, determines=('base', 'data')),
    _key("coarse", "bool", False, "train on coarse labels; fine-label recovery is then measured", axis=True,
         condition=True, determines=('base', 'data', 'model')),
    _key("arch", "str", "resnet18", "architecture registry name", choices=tuple(ARCH_FAMILIES), axis=True,
         aliases=("architecture", "model"), determines=('base', 'model')),
    _num("width", "float", 0.25, "channel-width multiplier of the architecture", low=0.0, low_open=True,
         axis=True, determines=('base', 'model')),
    _key("stem", "str", "auto", "input stem: cifar (3×3) or imagenet (7×7 + pool); auto: cifar for ≤ 64 px",
         choices=("auto", "cifar", "imagenet"), axis=True, determines=('base', 'model')),
    _key("weights", "path", None, "local state_dict to start the backbone from", nullable=True, determines=('base',)),
    _key("method", "str", "erm", "training method registry name", choices=tuple(METHOD_OPTIONS), axis=True),
    _key("method_options", "mapping", {}, "options of the method (see the method options tables)"),
    _num("penalty", "float", 0.0, "the method's penalty / blend strength (one axis; its meaning depends on the "
         "method)", low=0.0, axis=True, aliases=("lambda", "lam", "alpha"),
         used_by=methods_in("tuning") + ("gc_reg",),
         per_method={"change_penalty": "λ of the change penalty λ·‖Δ‖ (squared L2 or L1, see option norm)",
                     "mas": "λ of the MAS penalty λ·Σ Ω_j (θ_j − θ*_j)²",
                     "side_tuning": "blend α of r(x) = α·base(x) + (1 − α)·side(x), in [0, 1]",
                     "gc_reg": "λ of the geometric-complexity regulariser λ·mean ‖∂f/∂x‖²_F (0: plain transfer)"},
         method_range={"side_tuning": (0.0, 1.0)}, fuse_axis=True),
    _key("init_from", "str", None, "start from an earlier trial (`trial:ID` with the id of a trial of this spec) or a checkpoint / "
         "weights file", nullable=True, fuse_axis=True),
    _key("optimizer", "str", "sgd", "optimiser", choices=("sgd", "adam", "adamw"), axis=True, determines=('base',)),
    _num("lr", "float", 0.05, "peak learning rate", low=0.0, low_open=True, axis=True,
         aliases=("learning_rate",), fuse_axis=True),
    _num("momentum", "float", 0.9, "SGD momentum", low=0.0, high=1.0, axis=True, determines=('base',), fuse_axis=True),
    _num("weight_decay", "float", 5e-4, "L2 weight decay", low=0.0, axis=True, aliases=("wd",), determines=('base',), fuse_axis=True),
    _key("schedule", "str", "cosine", "learning-rate schedule (step: ×0.1 at 50% and 75%)",
         choices=("cosine", "constant", "step"), axis=True, determines=('base',)),
    _num("epochs", "int", 5, "training epochs (tuning methods: the cap on tuning epochs)", low=1, unit="epochs",
         axis=True, aliases=("num_epochs",)),
    _num("batch_size", "int", 128, "training mini-batch size", low=1, unit="images", axis=True, aliases=("bs",), determines=('base',)),
    _key("augment", "bool", True, "random crop + flip on the device", axis=True, determines=('base',)),
    _num("seed", "int", 0, "seed of data generation, initialisation and sampling", low=0, axis=True, determines=('base', 'data'), fuse_axis=True),
    _key("device", "str", "auto", "torch device (auto: cuda if available)", in_id=False),
    _key("precision", "str", "auto", "autocast precision (auto: bf16 on CUDA, fp32 on CPU)",
         choices=("auto", "fp32", "bf16", "fp16"), determines=('base',)),      # rows record the precision used as `amp`
    _key("channels_last", "bool", "auto", "channels-last memory format (auto: on CUDA)",
         choices=("auto", True, False), determines=('base',)),
    _key("compile", "bool", False, "torch.compile the training forward", determines=('base',)),
    _key("deterministic", "bool", False, "deterministic kernels: torch deterministic algorithms, oneDNN off on "
         "the CPU, cuDNN deterministic without autotuning, a fixed cuBLAS workspace (slower; docs/fused.md "
         "says how far default kernels drift)", id_if_set=True, determines=('base',)),
    _key("metrics", "list[str]", ["nc", "fairness"], "metric sets computed each epoch (fine is added with "
         "coarse, gc with method transfer)", choices=METRIC_SETS, item="metric set"),
    _num("metrics_train_samples", "int", 5000, "stratified train subsample for train-split metrics", low=1,
         unit="samples"),
    _num("eval_batch_size", "int", 512, "evaluation batch size", low=1, in_id=False),
    _num("fine_every", "int", 0, "fine-label recovery every k epochs (0: final epoch only)", low=0),
    _num("eval_every", "int", 1, "evaluate (metric rows) every k epochs and at the last; other epochs write only "
         "their train row (train_loss, timings)", low=1, unit="epochs", in_id=False),
    _num("gc_samples", "int", 128, "training images on which geometric complexity is estimated", low=1),
    _num("gc_probes", "int", 8, "Hutchinson probes of the GC estimator", low=1),
    _key("checkpoint_dir", "path", None, "where the trial checkpoints (set by the runner)", nullable=True,
         reserved=True, in_id=False, sweepable=False),
    _key("trial_id", "str", None, "the trial's id (set by the planner)", nullable=True, reserved=True,
         in_id=False, sweepable=False),
]
CONFIG: dict[str, Key] = {k.name: k for k in _K}
DEFAULTS: dict = {k.name: k.default for k in _K}

# --------------------------------------------------------------------------- metrics
_PAPYAN = "Papyan, Han, Donoho, PNAS 2020"
_MOUHEB = "Mouheb et al., MICCAI 2024 (subgroup NC)"
_FAIR = "fairness literature (Hardt et al. 2016; Sagawa et al. 2020)"


def _m(name, scope, hib, meaning, **kw) -> Metric:
    return Metric(name, scope, hib, meaning, **kw)


_NC = dict(metric_set="nc", source=_PAPYAN)
_FR = dict(metric_set="fairness", source=_FAIR)
_M = [
    _m("n", "split+group", None, "rows (samples) the split/subgroup row is computed on", dtype="int",
       unit="samples"),
    _m("loss", "split", False, "mean cross-entropy on the split", unit="nats", reported=True),
    _m("acc", "split+group", True, "accuracy against the (possibly bias-flipped) labels", reported=True, curve=3),
    _m("acc_clean", "split", True, "accuracy against the clean labels"),
    _m("majority_acc", "split", None, "rate of the most frequent label: the accuracy of always guessing it"),
    _m("nc1", "split+group", False, "NC1 = tr(Σ_W Σ_B⁺)/C, within-class variability collapse", reported=True,
       by_group=True, curve=1, **_NC),   # per subgroup: subgroup collapse (Mouheb et al.)
    _m("nc1_tr_ratio", "split+group", False, "tr(Σ_W)/tr(Σ_B)", reported=True, metric_set="nc",
       source="Tirer et al. 2023"),
    _m("nc1_clean", "split+group", False, "NC1 with the clean labels (label-bias runs; train split)",
       metric_set="nc", splits=("train",), source=_MOUHEB),
    _m("nc1_cb", "split+group", False, "NC1 with the class-balanced Σ_W = (1/C) Σ_c Σ_c (classes weigh equally, "
       "not by size); rows of runs with classes × subgroups ≤ 16", metric_set="nc", source=_PAPYAN),
    _m("nc1_tr_ratio_cb", "split+group", False, "tr(Σ_W)/tr(Σ_B) with the class-balanced Σ_W", metric_set="nc",
       source="Tirer et al. 2023"),
    _m("nc1_cb_clean", "split+group", False, "class-balanced NC1 with the clean labels (label-bias runs)",
       metric_set="nc", splits=("train",), source=_MOUHEB),
    _m("nc2_norm_cv", "split+group", False, "coefficient of variation of centred class-mean norms", **_NC),
    _m("nc2_cos_std", "split+group", False, "std of the cosines between centred class means", **_NC),
    _m("nc2_max_angle", "split+group", False, "mean |cos + 1/(C−1)| of centred class means (coherence)", **_NC),
    _m("nc2_etf", "split+group", False, "Frobenius distance of the normalised mean Gram matrix to a simplex ETF",
       reported=True, **_NC),
    _m("nc2_wnorm_cv", "split+group", False, "coefficient of variation of classifier row norms", **_NC),
    _m("nc2_wmax_angle", "split+group", False, "coherence of classifier rows", **_NC),
    _m("nc3", "split+group", False, "‖W/‖W‖ − M̃ᵀ/‖M̃‖‖²_F, self-duality of classifier and means", reported=True,
       **_NC),
    _m("nc3_etf", "split+group", False, "distance of W·M̃ (normalised) to a simplex ETF", metric_set="nc",
       source="Zhu et al., NeurIPS 2021"),
    _m("nc4_mismatch", "split+group", False, "share of samples where the network and the nearest-class-mean "
       "rule disagree", reported=True, **_NC),
    _m("ncc_acc", "split+group", True, "nearest-class-mean accuracy against the labels", **_NC),
    _m("nc4_mismatch_global", "group", False, "NC4 mismatch of a subgroup against the global class means",
       metric_set="nc", source=_MOUHEB),
    _m("ncc_acc_global", "group", True, "NCC accuracy of a subgroup with the global class means",
       metric_set="nc", source=_MOUHEB),
    _m("cdnv", "split+group", False, "class-distance-normalised variance, mean over class pairs", reported=True,
       metric_set="nc", source="Galanti et al., ICLR 2022"),
    _m("align_cos", "group", True, "mean cosine of the subgroup's centred class means with the overall ones",
       metric_set="nc", source=_MOUHEB),
    _m("align_dist", "group", False, "NC3-style distance of subgroup means to overall means", metric_set="nc",
       source=_MOUHEB),
    _m("axis_cos", "group", True, "cosine of the subgroup's class-difference axis with the overall one (C=2)",
       metric_set="nc", source=_MOUHEB),
    _m("axis_ratio", "group", None, "length ratio of the subgroup's class-difference axis to the overall one",
       metric_set="nc", source=_MOUHEB),
    _m("subgroup_offset", "group", None, "distance of the subgroup's global mean to the overall one, in "
       "class-mean radii", metric_set="nc", source=_MOUHEB),
    _m("memorisation", "split+group", None, "share of flipped training samples predicted as their flipped "
       "(observed) label", splits=("train",), source=_MOUHEB),
    # collapse studies (issue 16): clean-label NC beside observed-label NC, and the flipped samples
    _m("nc1_tr_ratio_clean", "split+group", False, "tr(Σ_W)/tr(Σ_B) with the clean labels (label-bias runs)",
       metric_set="nc", splits=("train",), source=_MOUHEB),
    _m("cdnv_clean", "split+group", False, "CDNV with the clean labels (label-bias runs)", metric_set="nc",
       splits=("train",), source=_MOUHEB),
    _m("nc3_clean", "split+group", False, "NC3 with the clean labels (label-bias runs)", metric_set="nc",
       splits=("train",), source=_MOUHEB),
    _m("flipped_acc_clean", "split+group", True, "share of flipped training samples predicted as their clean "
       "label (separate from memorisation)", splits=("train",), source=_MOUHEB),
    _m("n_flipped", "split+group", None, "flipped training samples in the slice", dtype="int",
       splits=("train",), unit="samples"),
    _m("acc_observed", "group", True, "subgroup accuracy against the observed (flipped) training labels",
       splits=("train",)),
    _m("avg_acc", "split", True, "sample-weighted accuracy on the clean labels", reported=True, **_FR),
    _m("mean_group_acc", "split", True, "mean over groups of the group accuracy", reported=True, **_FR),
    _m("worst_group_acc", "split", True, "lowest group accuracy", reported=True, curve=2, **_FR),
    _m("gap", "split", False, "avg_acc − worst_group_acc", reported=True, **_FR),
    _m("gap_maxmin", "split", False, "best minus worst group accuracy", **_FR),
    _m("dp_diff", "split", False, "demographic-parity difference (range of selection rates)", reported=True,
       **_FR),
    _m("dp_ratio", "split", True, "min/max selection rate", **_FR),
    _m("eo_diff", "split", False, "equalised-odds difference (worse of the TPR and FPR ranges)", reported=True,
       **_FR),
    _m("eo_diff_mean", "split", False, "mean of the TPR and FPR ranges", **_FR),
    _m("eo_ratio", "split", True, "min of the TPR and FPR min/max ratios", **_FR),
    _m("tpr_gap", "split", False, "range of group true-positive rates", **_FR),
    _m("fpr_gap", "split", False, "range of group false-positive rates", **_FR),
    _m("tpr", "group", True, "true-positive rate of the subgroup", **_FR),
    _m("fpr", "group", False, "false-positive rate of the subgroup", **_FR),
    _m("precision", "group", True, "precision of the subgroup", **_FR),
    _m("f1", "group", True, "binary F1 of the subgroup", **_FR),
    _m("selection_rate", "group", None, "share predicted positive in the subgroup", **_FR),
    _m("gc", "split", None, "geometric complexity of the embedding map, mean ‖∇ₓf‖²_F", metric_set="gc",
       splits=("train", "test"), reported=True, source="Dherin et al., NeurIPS 2022; Munn et al., NeurIPS 2024"),
    _m("gc_norm", "split", None, "gc ÷ the features' total variance tr Cov(f(X)) on the same inputs: unchanged "
       "when the embedding is rescaled", metric_set="gc", splits=("train", "test"), source="ncsweep (scale-free GC)"),
    _m("gc_exact", "split", None, "gc from the full Jacobian (no probes); final epoch, embeddings of ≤ 256 dims",
       metric_set="gc", splits=("train", "test"), every_epoch=False, source="Dherin et al., NeurIPS 2022"),
    _m("fine_cluster_acc", "split", True, "fine-label accuracy of k-means clusters inside each coarse class "
       "(Hungarian matching)", metric_set="fine", splits=("test",), reported=True,
       source="Yang, Steinhardt, Hu, ICML 2023", every_epoch=False),
    _m("fine_purity", "split", True, "cluster purity w.r.t. fine labels", metric_set="fine", splits=("test",), every_epoch=False),
    _m("fine_nmi", "split", True, "NMI of clusters and fine labels", metric_set="fine", splits=("test",), every_epoch=False,
       reported=True, source="Yang, Steinhardt, Hu, ICML 2023"),
    _m("fine_ari", "split", True, "adjusted Rand index of clusters and fine labels", metric_set="fine",
       splits=("test",), every_epoch=False),
    _m("fine_nmi_chance", "split", None, "NMI with fine labels permuted inside each coarse class (chance level)",
       metric_set="fine", splits=("test",), every_epoch=False),
    _m("fine_probe_acc", "split", True, "linear-probe accuracy on fine labels from frozen features",
       metric_set="fine", splits=("test",), reported=True, every_epoch=False),
    _m("fine_nc1", "split", False, "NC1 of fine labels inside each coarse class, mean", metric_set="fine",
       splits=("test",), every_epoch=False),
    _m("train_loss", "trial", False, "mean training loss of the epoch", unit="nats", reported=True),
    _m("lr_now", "trial", None, "learning rate at the end of the epoch"),
    _m("train_time", "trial", None, "training time of the epoch", unit="s"),
    _m("eval_time", "trial", None, "evaluation time of the epoch", unit="s"),
    _m("images_per_s", "trial", True, "training throughput", unit="images/s"),
    _m("tune_acc", "trial", True, "accuracy on the tuning set", methods=methods_in("tuning")),
    _m("n_tune", "trial", None, "size of the tuning set", dtype="int", methods=methods_in("tuning"), unit="samples"),
    _m("n_tune_per_group", "trial", None, "bias-contradicting tuning samples per bias-contradicting group (the "
       "option n_tune)", dtype="int", methods=methods_in("tuning"), unit="samples"),
    _m("early_stopped", "trial", None, "the tuning stopped early", dtype="bool", methods=methods_in("tuning")),
    _m("val_worst_group_acc_best", "trial", True, "best val worst-group accuracy of the tuning so far (early "
       "stopping's criterion)", methods=methods_in("tuning")),
    _m("best_epoch", "trial", None, "tuning epoch whose weights early stopping keeps", dtype="int",
       methods=methods_in("tuning")),
    _m("base_worst_group_acc", "trial", True, "test worst-group accuracy of the frozen base model",
       methods=methods_in("tuning"), source="Penzel, Stein, Denzler, VISAPP 2024"),
    _m("base_val_worst_group_acc", "trial", True, "val worst-group accuracy of the frozen base model",
       methods=methods_in("tuning")),
    _m("base_probe_wga", "trial", True, "test worst-group accuracy of an L2 logistic probe on the frozen base's "
       "features, fitted on group-balanced val (does the base encode the core feature?)", methods=methods_in("tuning")),
    _m("gdro_max_weight", "trial", None, "largest GroupDRO group weight q_g at the end of the epoch",
       methods=("groupdro",), source="Sagawa et al., ICLR 2020"),
    _m("gdro_max_group", "trial", None, "group with the largest GroupDRO weight", dtype="int",
       methods=("groupdro",)),
    _m("jtt_error_rate", "trial", None, "share of training samples in JTT's error set", methods=("jtt",),
       source="Liu et al., ICML 2021"),
    _m("jtt_error_minority_share", "trial", None, "share of JTT's error set in the bias-contradicting groups",
       methods=("jtt",)),
    _m("spurious_share", "split", False, "share of the (non-negative) CAM / Grad-CAM mass on the known spurious "
       "region, mean over groups", metric_set="saliency", splits=("test",), source="Zhou et al., CVPR 2016"),
    _m("saliency_panel", "split", None, "encoded images and saliency maps, a few per group (for the report)",
       dtype="str", metric_set="saliency", splits=("test",)),
    _m("pointing_acc", "split", True, "pointing game: share of images whose CAM / Grad-CAM maximum lies on the "
       "object (not the spurious region), mean over groups", metric_set="saliency", splits=("test",),
       source="Zhang et al., ECCV 2016"),
    _m("pointing_worst", "split", True, "pointing-game hit rate of the group where it is lowest",
       metric_set="saliency", splits=("test",), source="Zhang et al., ECCV 2016"),
    _m("pointing_acc_before", "trial", True, "pointing_acc of the model before debiasing (ERM head / base)",
       metric_set="saliency", methods=("dfr",) + methods_in("tuning")),
    _m("pointing_worst_before", "trial", True, "pointing_worst of the model before debiasing (ERM head / base)",
       metric_set="saliency", methods=("dfr",) + methods_in("tuning")),
    _m("spurious_share_before", "trial", False, "spurious_share of the model before debiasing (ERM head / base)",
       metric_set="saliency", methods=("dfr",) + methods_in("tuning")),
    _m("saliency_panel_before", "trial", None, "saliency_panel of the model before debiasing", dtype="str",
       metric_set="saliency", methods=("dfr",) + methods_in("tuning")),
    _m("delta_norm", "trial", None, "‖θ − θ_base‖₂, size of the change from the base model",
       methods=methods_in("tuning"), reported=True, source="Penzel, Stein, Denzler, VISAPP 2024"),
    _m("erm_worst_group_acc", "trial", True, "test worst-group accuracy of the ERM head before DFR",
       methods=("dfr",), source="Kirichenko et al., ICLR 2023", every_epoch=False),
    _m("dfr_worst_group_acc", "trial", True, "test worst-group accuracy after DFR", methods=("dfr",), every_epoch=False,
       reported=True, source="Kirichenko et al., ICLR 2023"),
    _m("dfr_C", "trial", None, "chosen inverse L1 strength", methods=("dfr",), every_epoch=False),
    *[_m(f"{h}_acc_g{g}", "trial", True, f"test accuracy of the {name} in group g = 2y + p = {g}", methods=("dfr",),
         every_epoch=False, source="Le, Schlötterer, Seifert 2023")
      for h, name in (("erm", "ERM head before DFR"), ("dfr", "DFR head")) for g in range(4)],
    _m("dfr_l1_bal_wga", "trial", True, "test worst-group accuracy of the L1 head on the group-balanced val set", methods=("dfr",),
       source="Le, Schlötterer, Seifert 2023"),
    _m("dfr_l1_bal_sparsity", "trial", None, "share of zero weights of the L1 head on the group-balanced val set", methods=("dfr",)),
    _m("dfr_l1_bal_hoyer", "trial", None, "Hoyer sparsity of the L1 head on the group-balanced val set", methods=("dfr",)),
    _m("dfr_l1_unbal_wga", "trial", True, "test worst-group accuracy of the L1 head on the unbalanced val set", methods=("dfr",),
       source="Le, Schlötterer, Seifert 2023"),
    _m("dfr_l1_unbal_sparsity", "trial", None, "share of zero weights of the L1 head on the unbalanced val set", methods=("dfr",)),
    _m("dfr_l1_unbal_hoyer", "trial", None, "Hoyer sparsity of the L1 head on the unbalanced val set", methods=("dfr",)),
    _m("dfr_l2_bal_wga", "trial", True, "test worst-group accuracy of the L2 head on the group-balanced val set", methods=("dfr",),
       source="Le, Schlötterer, Seifert 2023"),
    _m("dfr_l2_bal_sparsity", "trial", None, "share of zero weights of the L2 head on the group-balanced val set", methods=("dfr",)),
    _m("dfr_l2_bal_hoyer", "trial", None, "Hoyer sparsity of the L2 head on the group-balanced val set", methods=("dfr",)),
    _m("sparsity_before", "trial", None, "share of zero last-layer weights before DFR", methods=("dfr",), every_epoch=False,
       source="Le, Schlötterer, Seifert 2023"),
    _m("sparsity_after", "trial", None, "share of zero last-layer weights after DFR", methods=("dfr",), every_epoch=False,
       source="Le, Schlötterer, Seifert 2023"),
    _m("sparsity_after_1e-6", "trial", None, "share of |w| ≤ 1e-6 after DFR", methods=("dfr",), every_epoch=False),
    _m("hoyer_before", "trial", None, "Hoyer sparsity of the last layer before DFR", methods=("dfr",), every_epoch=False),
    _m("hoyer_after", "trial", None, "Hoyer sparsity of the last layer after DFR", methods=("dfr",), every_epoch=False),
    _m("target_nc1", "trial", False, "NC1 of held-out target-class test embeddings", methods=methods_in("transfer"),
       source="Munn, Dherin, Gonzalvo, NeurIPS 2024"),
    _m("target_cdnv", "trial", False, "CDNV of held-out target-class test embeddings", methods=methods_in("transfer"),
       source="Munn, Dherin, Gonzalvo, NeurIPS 2024"),
    _m("fewshot_acc", "trial", True, "n-way k-shot nearest-class-mean accuracy on target classes",
       methods=methods_in("transfer"), reported=True, source="Munn, Dherin, Gonzalvo, NeurIPS 2024"),
    _m("fewshot_ci", "trial", None, "95% half-width of fewshot_acc", methods=methods_in("transfer")),
    _m("fewshot_acc_1shot", "trial", True, "1-shot nearest-class-mean accuracy", methods=methods_in("transfer")),
    _m("fewshot_ci_1shot", "trial", None, "95% half-width of fewshot_acc_1shot", methods=methods_in("transfer")),
    _m("target_shared", "trial", None, "share of the target classes whose coarse family also has a source class "
       "(1: compatible target arm, 0: incompatible; NaN without coarse labels)", methods=methods_in("transfer")),
]
METRICS: dict[str, Metric] = {m.name: m for m in _M}

# Row columns that are neither config keys nor metrics: identity, runtime state, provenance.
@dataclass(frozen=True)
class RowField:
    """One row column that is neither a config key nor a metric. kind: "" (identity, state),
    "host" (where and with what the attempt ran: the same on every row of a trial, listed in the
    report's hosts table) or "time" (when the row was recorded: the reader keeps the newest
    copy of a row by it and drops it from the analysed columns)."""
    type: str
    doc: str
    kind: str = ""


ROW_FIELDS: dict[str, RowField] = {
    "trial_id": RowField("str", "the trial's id"),
    "epoch": RowField("int", "0-based epoch"),
    "split": RowField("str", "train | val | test"),
    "group": RowField("str", "'all' or the subgroup id"),
    "status": RowField("str", "ok | diverged"),
    "family": RowField("str", "architecture family"),
    "hostname": RowField("str", "machine the attempt ran on", kind="host"),
    "node_id": RowField("str", "Ray node the attempt ran on", kind="host"),
    "device": RowField("str", "device name the trial ran on", kind="host"),
    "amp": RowField("str", "precision actually used", kind="host"),
    "torch_version": RowField("str", "torch version", kind="host"),
    "ray_version": RowField("str", "Ray version", kind="host"),
    "ncsweep_version": RowField("str", "ncsweep version", kind="host"),
    "deterministic": RowField("bool", "the trial ran with deterministic kernels (config key deterministic)"),
    "metrics_train_samples": RowField("int", "train rows the train-split metrics used"),
    "attempt": RowField("int", "attempt number of the trial"),
    "attempt_started_at": RowField("float", "when the attempt started (Unix time)"),
    "epoch_ended_at": RowField("float", "when the epoch's rows were written (Unix time; set by the runner)",
                               kind="time"),
    "cudnn_deterministic": RowField("bool", "cudnn.deterministic"),
    "cudnn_benchmark": RowField("bool", "cudnn.benchmark"),
    "schema_version": RowField("int", "SCHEMA_VERSION of the row"),
}


def row_fields(kind: str) -> tuple[str, ...]:
    """Row columns of one kind ("host" or "time", see RowField), in declaration order."""
    if kind not in {f.kind for f in ROW_FIELDS.values()} - {""}:
        raise ValueError(f"unknown row-field kind {kind!r}: use 'host' or 'time'")
    return tuple(n for n, f in ROW_FIELDS.items() if f.kind == kind)


# --------------------------------------------------------------------------- derived views
def axis_keys() -> tuple[str, ...]:
    """Config keys that are analysis factors when a run sweeps them."""
    return tuple(k for k, v in CONFIG.items() if v.axis)


def keys_determining(what: str) -> tuple[str, ...]:
    """Config keys whose value decides `what` ("data", "base" or "model", see Key.determines), then
    the dataset options that do, as `data.<option>` (any dataset's, in declaration order)."""
    if what not in {"data", "base", "model"}:
        raise ValueError(f"unknown Key.determines value {what!r}: use 'data', 'base' or 'model'")
    options = [o for opts in (COMMON_DATASET_OPTIONS, *DATASET_OPTIONS.values()) for o in opts.values()]
    return tuple(k for k, v in CONFIG.items() if what in v.determines) + \
        tuple(dict.fromkeys(f"data.{o.name}" for o in options if what in o.determines))


def fuse_axes() -> tuple[str, ...]:
    """Config keys in which the configurations of one fused group may differ."""
    return tuple(k for k, v in CONFIG.items() if v.fuse_axis)


def config_columns() -> tuple[str, ...]:
    """Config keys copied into every row (the axis keys)."""
    return axis_keys()


def method_defaults(method: str) -> dict:
    """Defaults of a method's options (fresh copies of lists)."""
    return {k: (list(v.default) if isinstance(v.default, list) else v.default)
            for k, v in METHOD_OPTIONS[method].items()}


def dataset_target(dataset: str, options: dict) -> str:
    """The training target (data option `target`) a dataset's options select, its default filled in."""
    return {**dataset_defaults(dataset), **options}.get("target", "label")


def dataset_options(dataset: str) -> dict[str, Key]:
    """Every option a dataset accepts: its own plus the common ones."""
    return {**COMMON_DATASET_OPTIONS, **DATASET_OPTIONS.get(dataset, {})}


def dataset_defaults(dataset: str) -> dict:
    """The defaults of a dataset's options, leaving out those without one (null: `root`, `n_train`
    of a file dataset: all its images), so a builder reads `opts[name]` for every other option."""
    return {k: v.default for k, v in dataset_options(dataset).items() if v.default is not None}


def trial_metric_sets(metrics, coarse: bool = False, method: str = "erm") -> set:
    """The metric sets a trial computes (fine is added with coarse, gc with transfer)."""
    out = set(metrics or ())
    if coarse:
        out.add("fine")
    if method in methods_in("transfer"):
        out.add("gc")
    return out


def produced(metric: Metric, methods=None, metric_sets=None) -> bool:
    """Whether a trial with one of `methods` and `metric_sets` produces the metric (None: any)."""
    if metric.methods and methods is not None and not set(metric.methods) & set(methods):
        return False
    return metric.metric_set is None or metric_sets is None or metric.metric_set in metric_sets


def reported_metrics(methods=None, metric_sets=None) -> tuple[str, ...]:
    """The keys reported to Ray Tune (what schedulers and searchers can use), optionally only
    those a trial with one of `methods` and `metric_sets` produces."""
    out = []
    for m in METRICS.values():
        if not m.reported or not produced(m, methods, metric_sets):
            continue
        out += [m.name] if m.name == "train_loss" else [f"{s}_{m.name}" for s in m.splits]
    return tuple(dict.fromkeys(out))   # train_loss: the epoch's training loss (not the eval loss of train)


def reported_base() -> tuple[str, ...]:
    """Base names of the metrics the runner reports (as <split>_<name>)."""
    return tuple(m.name for m in METRICS.values() if m.reported and m.name != "train_loss")


_GROUP_SUFFIX = re.compile(r"_g(\d+)$")     # subgroup ids are integers (the rows' `group` column)


def parse_metric(name: str, split_required: bool = False, columns=()) -> tuple[str | None, str, str | None]:
    """`test_worst_group_acc` → ("test", "worst_group_acc", None); `train_nc1_g1` → ("train", "nc1", "1");
    `train_loss` → (None, "train_loss", None), the metric of that name (the epoch's training loss).
    split_required: the name of an analysis table column, `<split>_<metric>[_g<id>]`; only readings
    with a split count, so `train_loss` → ("train", "loss", None), the loss on the train split.
    columns: row columns to accept as metrics besides the catalogue's (an analysis of extra columns).
    The one parser of metric names (sweeps and analysis both call it). Raises KeyError with a
    did-you-mean when no metric matches."""
    cands = [(name, None)]
    m = _GROUP_SUFFIX.search(name)
    if m:
        cands.append((name[:m.start()], m.group(1)))
    known = METRICS.keys() | set(columns)
    for cand, group in cands:
        if cand in known and not split_required:
            return None, cand, group
        split, _, rest = cand.partition("_")
        if split in SPLITS and rest in known:
            return split, rest, group
    near = difflib.get_close_matches(name, [f"{s}_{n}" for s in SPLITS for n in sorted(known)] if split_required
                                     else sorted(known) + list(reported_metrics()), n=1)
    form = " (expected <split>_<metric>[_g<id>] with split train, val or test)" if split_required else ""
    raise KeyError(f"unknown metric {name!r}{form}" + (f"; did you mean {near[0]!r}?" if near else ""))


def metric_info(name: str) -> Metric:
    """The catalogue entry of a metric, given its base name or a split-prefixed / group-suffixed one."""
    return METRICS[parse_metric(name)[1]]


def label(name: str) -> str:
    """A report label: `test worst_group_acc (↑)`, with the unit when there is one."""
    split, base, group = parse_metric(name)
    m = METRICS[base]
    arrow = {True: " ↑", False: " ↓", None: ""}[m.higher_is_better]
    parts = [p for p in (split, base, f"group {group}" if group else None) if p]
    return " ".join(parts) + (f" [{m.unit}]" if m.unit else "") + arrow


def learned_nothing(val_acc: float, majority_acc: float, margin: float = LEARNED_NOTHING_MARGIN) -> bool:
    """A trial "learned nothing" when its validation accuracy is within `margin` of the
    majority-class rate (the accuracy of always predicting the most frequent label)."""
    return not (val_acc > majority_acc + margin)


def did_you_mean(name: str, known, aliases: dict | None = None) -> str:
    """' did you mean `x`?' or the list of known names."""
    if aliases and name in aliases:
        return f"did you mean `{aliases[name]}`?"
    known = [str(k) for k in known]
    near = difflib.get_close_matches(str(name), known, n=1) or \
        [k for k in known if len(str(name)) >= 3 and (k.startswith(str(name)) or str(name) in k)][:1]
    return f"did you mean `{near[0]}`?" if near else f"known: {', '.join(sorted(known)) or 'none'}"


def config_aliases() -> dict:
    return {a: k.name for k in CONFIG.values() for a in k.aliases}


def check_value(key: Key, value, method: str | None = None) -> str | None:
    """None when `value` is acceptable for `key`, else what is allowed (the caller names the field)."""
    if value is None:
        return None if key.nullable or (key.default is None and not key.required) else _must(key, method)
    if key.choices is not None and key.type != "list[str]":
        ok = any(value == c and type(value) is type(c) for c in key.choices)
        return None if ok else _must(key, method) + _dym(value, key.choices)
    t = key.type
    if t == "bool":
        return None if isinstance(value, bool) else "must be true or false"
    if t in ("str", "path"):
        return None if isinstance(value, str) and value else _must(key, method)
    if t == "mapping":
        return None if isinstance(value, dict) else "must be a mapping"
    if t == "list[str]":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return "must be a list of strings" + (f" from {list(key.choices)}" if key.choices else "")
        bad = [v for v in value if key.choices is not None and v not in key.choices]
        return f"unknown {key.item} {bad[0]!r}; choose from {list(key.choices)}" if bad else None
    if t == "list[float]":
        if not isinstance(value, list) or not value:
            return _must(key, method)
        for v in value:
            err = _check_number(key, v, "float", method)
            if err:
                return f"entry {v!r} {err}"
        return None
    return _check_number(key, value, t, method)


def _check_number(key: Key, v, t: str, method) -> str | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (t == "int" and not isinstance(v, int)):
        return _must(key, method)
    if not math.isfinite(v):
        return f"must be finite: {key.allowed(method)}"
    lo, hi = key.method_range.get(method, (key.low, key.high))
    if lo is not None and (v <= lo if key.low_open else v < lo) or \
            hi is not None and (v >= hi if key.high_open else v > hi):
        extra = f" (for method {method}: {key.per_method.get(method, '')})" if method in key.method_range else ""
        return f"must be {key.allowed(method)}{extra}"
    return None


def _must(key: Key, method=None) -> str:
    a = key.allowed(method)
    return a if a.startswith("choose") else "must be " + a


def _dym(value, choices) -> str:
    near = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    return f"; did you mean {near[0]!r}?" if near and near[0] != str(value) else ""


def row_schema():
    """The versioned pyarrow schema of row Parquet files (pyarrow is imported here, lazily).
    Columns: ROW_FIELDS, the config columns, and every metric; schema metadata carries
    SCHEMA_VERSION."""
    import pyarrow as pa

    types = {"int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(), "str": pa.string(),
             "path": pa.string(), "list[str]": pa.string(), "list[float]": pa.string(), "mapping": pa.string()}
    cols = {name: types[f.type] for name, f in ROW_FIELDS.items()}
    for k in config_columns():
        cols.setdefault(k, types[CONFIG[k].type])
    for m in METRICS.values():
        cols.setdefault(m.name, types[m.dtype])
    return pa.schema([pa.field(n, t) for n, t in cols.items()],
                     metadata={"ncsweep_schema_version": str(SCHEMA_VERSION)})
