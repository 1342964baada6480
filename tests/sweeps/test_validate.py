"""The spec validator: each class of bad spec is refused with exit code 2, one line per problem
naming the field's full path, the bad value and what is accepted; never a traceback."""
import copy
import time

import pytest

from sweeps.cli import main
from sweeps.plan import planned_configs
from sweeps.spec import SpecError, load_spec, parse_spec

GOOD = {
    "name": "t",
    "dataset": {"name": "biased_shapes", "options": {"n_train": 64}},
    "base": {"epochs": 4, "width": 0.125},
    "space": {"arch": {"grid": ["resnet18", "vgg11"]}, "lr": {"loguniform": [1e-3, 0.1]}},
    "search": {"algorithm": "random", "num_samples": 2, "seed": 1},
    "scheduler": {"type": "asha", "metric": "val_worst_group_acc", "mode": "max", "grace_period": 1},
    "resources": {"cpu": 1},
}


def spec_with(**parts) -> dict:
    spec = copy.deepcopy(GOOD)
    for dotted, value in parts.items():
        *head, last = dotted.split("__")
        node = spec
        for k in head:
            node = node.setdefault(k, {})
        node[last] = value
    return spec


def refused(spec) -> list[str]:
    with pytest.raises(SpecError) as e:
        parse_spec(spec)
    assert all(line.startswith("spec field `") for line in e.value.problems), e.value.problems
    return e.value.problems


def one(spec, field, *words) -> str:
    """The spec is refused with exactly the one problem at `field`, whose line holds `words`."""
    lines = refused(spec)
    assert len(lines) == 1 and lines[0].startswith(f"spec field `{field}`"), lines
    assert all(w in lines[0] for w in words), lines[0]
    return lines[0]


@pytest.mark.parametrize("spec, field, words", [
    # unknown keys at every level, with a did-you-mean
    (spec_with(base__method_options={"n_trian": 3}, base__method="mas"), "base.method_options.n_trian",
     ["'mas'", "`n_tune`"]),
    (spec_with(dataset__options={"n_trian": 3}), "dataset.options.n_trian", ["`n_train`"]),
    (spec_with(search__metrc="val_acc"), "search.metrc", ["`metric`"]),
    (spec_with(scheduler__grace=2), "scheduler.grace", ["`grace_period`"]),
    (spec_with(resources__gpus=1), "resources.gpus", ["`gpu`"]),
    (spec_with(base__n_epochs=3), "base.n_epochs", ["`epochs`"]),
    # wrong types
    (spec_with(base__seed="abc"), "base.seed", ["'abc'", "integer"]),
    (spec_with(base__epochs=2.5), "base.epochs", ["2.5", "positive integer"]),
    (spec_with(base__augment="maybe"), "base.augment", ["true or false"]),
    # non-finite numbers
    (spec_with(base__lr=float("nan")), "base.lr", ["nan", "finite"]),
    (spec_with(space__lr={"uniform": [1e-3, float("inf")]}), "space.lr.uniform[1]", ["inf", "finite"]),
    # out of range
    (spec_with(dataset__options={"n_train": -5}), "dataset.options.n_train", ["-5", "positive integer"]),
    (spec_with(base__bias_level=1.5), "base.bias_level", ["1.5", "[0.0, 1.0]"]),
    # malformed distributions
    (spec_with(space__lr={"uniform": [0.1, 0.1]}), "space.lr.uniform", ["low < high"]),
    (spec_with(space__lr={"loguniform": [-1, 0.1]}), "space.lr.loguniform", ["> 0"]),
    (spec_with(space__lr={"uniform": [0.1]}), "space.lr.uniform", ["[low, high]"]),
    (spec_with(space__arch={"uniform": [0, 1]}), "space.arch.uniform", ["grid or choice"]),
    (spec_with(space__lr={"normal": [0, 1]}), "space.lr", ["grid | choice"]),
    # schedulers that cannot work
    (spec_with(scheduler__metric="val_fewshot_acc"), "scheduler.metric", ["'erm'", "not reported"]),
    (spec_with(scheduler__metric="val_gc"), "scheduler.metric", ["train_gc, test_gc"]),
    (spec_with(scheduler__metric="val_accuracy"), "scheduler.metric", ["unknown metric", "`val_acc`"]),
    (spec_with(scheduler__mode="min"), "scheduler.mode", ["higher is better", "max"]),
    (spec_with(scheduler__grace_period=9), "scheduler.grace_period", ["9", "epochs (4)"]),
    (spec_with(scheduler__reduction_factor=1), "scheduler.reduction_factor", ["> 1"]),
    (spec_with(scheduler__max_t=10), "scheduler.max_t", ["(4)"]),
    (spec_with(base__method="dfr", scheduler__metric="test_dfr_worst_group_acc"), "scheduler.metric",
     ["final epoch"]),
    (spec_with(search__mode="min", search__metric="val_acc", scheduler=None), "search.mode", ["max"]),
    # dataset files
    (spec_with(dataset={"name": "cifar10"}), "dataset.options.root", ["required"]),
    # reserved keys, run name
    (spec_with(base__trial_id="abc"), "base.trial_id", ["reserved"]),
    (spec_with(space__checkpoint_dir={"grid": ["/tmp"]}), "space.checkpoint_dir", ["reserved"]),
    (spec_with(name="../escape"), "name", ["plain file name"]),
    (spec_with(name="runs/a"), "name", ["plain file name"]),
    # init_from
    (spec_with(base__init_from="trial:xyz"), "base.init_from", ["12-hex"]),
    (spec_with(base__init_from="/no/such/state.pt"), "base.init_from", ["not found"]),
    (spec_with(base__weights="/no/such/weights.pt"), "base.weights", ["not found"]),
])
def test_each_kind_of_bad_spec_is_refused_naming_its_field(spec, field, words):
    one(spec, field, *words)


def test_every_problem_is_listed_not_only_the_first():
    lines = refused(spec_with(base__seed="abc", base__lr=float("nan"), resources__tpu=1, scheduler__mode="min"))
    fields = sorted(line.split("`")[1] for line in lines)
    assert fields == ["base.lr", "base.seed", "resources.tpu", "scheduler.mode"]


def test_dataset_files_are_checked_below_root(tmp_path):
    (tmp_path / "data_batch_1").write_bytes(b"")
    line = one(spec_with(dataset={"name": "cifar10", "options": {"root": str(tmp_path)}}), "dataset.options.root",
               "missing", "data_batch_2", "test_batch")
    assert "data_batch_1," not in line.split("missing")[1].split("(")[0]


def test_init_from_must_name_a_fitting_trial_of_the_spec():
    base = spec_with(space={"arch": {"grid": ["resnet18"]}}, search={"algorithm": "grid"}, scheduler=None)
    tid = planned_configs(parse_spec(base))[0]["trial_id"]
    ok = {**base, "variants": [{"method": "erm"}, {"method": "change_penalty", "init_from": f"trial:{tid}"}]}
    assert len(planned_configs(parse_spec(ok))) == 2
    other = tid[::-1]
    one({**ok, "variants": [{"method": "erm"}, {"method": "change_penalty", "init_from": f"trial:{other}"}]},
        "space.init_from", "names no trial")
    misfit = {**ok, "variants": [{"method": "erm"},
                                 {"method": "change_penalty", "arch": "vgg11", "init_from": f"trial:{tid}"}]}
    one(misfit, "space.init_from", "does not fit", "arch")


def test_init_from_a_checkpoint_of_another_run_must_fit_its_recorded_config(tmp_path):
    ckpt = tmp_path / "run" / "checkpoints" / "0123456789ab"
    ckpt.mkdir(parents=True)
    (ckpt / "state.pt").write_bytes(b"")
    (tmp_path / "run" / "trials").mkdir()
    (tmp_path / "run" / "trials" / "0123456789ab.json").write_text(
        '{"config": {"arch": "vgg11", "width": 0.125, "data": {"n_train": 999}}}')
    base = spec_with(space={"lr": {"grid": [0.1]}}, search={"algorithm": "grid"}, scheduler=None)
    base["base"].update(method="change_penalty", init_from=str(ckpt / "state.pt"))
    one(spec_with(**{"space": {"arch": {"grid": ["resnet18"]}}, "search": {"algorithm": "grid"}, "scheduler": None,
                     "base": {**base["base"]}}), "base.init_from", "does not fit", "arch='vgg11'")
    parse_spec({**base, "space": {"arch": {"grid": ["vgg11"]}}})      # other n_train: still fits


def test_penalty_range_depends_on_the_method_it_is_swept_with():
    spec = spec_with(space={"method": {"grid": ["mas", "side_tuning"]}, "penalty": {"grid": [0.5, 10.0]}},
                     search={"algorithm": "grid"}, scheduler=None)
    one(spec, "space.penalty.grid[1]", "side_tuning", "blend α")


def test_a_large_plan_is_refused_unless_allowed_and_counted_without_building_it():
    huge = spec_with(space={k: {"grid": list(range(1, 101))} for k in ("epochs", "batch_size", "seed", "gc_samples")},
                     search={"algorithm": "grid"}, scheduler=None)          # 10^8 trials
    t = time.perf_counter()
    one(huge, "space", "100000000 trials", "--allow-large")
    spec = parse_spec(huge, allow_large=True)
    assert time.perf_counter() - t < 5.0
    from sweeps.plan import iter_planned_configs, plan_size

    assert plan_size(spec) == 10 ** 8
    first = next(iter_planned_configs(spec))       # lazily: the first trial without the others
    assert first["epochs"] == 1 and first["seed"] == 1


def _write(tmp_path, text, name="s.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_yaml_duplicate_keys_and_tags_are_refused(tmp_path):
    with pytest.raises(SpecError) as e:
        load_spec(_write(tmp_path, "name: a\nbase:\n  lr: 0.1\n  lr: 0.2\n"))
    assert e.value.problems == ["spec field `base.lr` (line 4): duplicate key, also at line 3; a key may appear "
                                "once per mapping"]
    for tag in ("!!python/object/apply:os.system ['echo']", "!!binary aGk=", "!custom 1", "!!set {a}"):
        with pytest.raises(SpecError, match="not allowed in a spec"):
            load_spec(_write(tmp_path, f"name: {tag}\n"))


def test_yaml_reads_exponent_floats_as_numbers_and_refuses_alias_bombs(tmp_path):
    spec = load_spec(_write(tmp_path, "name: a\nbase: {lr: 1e-3}\n"))
    assert spec.base["lr"] == 0.001
    bomb = "a: &a [1,1,1,1,1,1,1,1,1,1]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(7))
    with pytest.raises(SpecError, match="expands to more than"):
        load_spec(_write(tmp_path, bomb))


def test_cli_exit_codes_and_output(tmp_path, capsys):
    good = _write(tmp_path, "name: g\nbase: {epochs: 2}\nspace:\n  arch: {grid: [resnet18, vgg11]}\n"
                        "  lr: {loguniform: [0.01, 0.1]}\n  seed: {grid: [0]}\nsearch: {algorithm: random, num_samples: 3}\n",
                  "good.yaml")
    assert main(["validate", str(good)]) == 0
    out = capsys.readouterr().out
    assert "6 trials planned" in out and "swept axes: arch, lr\n" in out     # seed takes one value: not swept
    bad = _write(tmp_path, "name: a\nbase: {seed: abc, lr: .nan}\nspace: {lr: {uniform: [0.1, .inf]}}\n")
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert {f"`{f}`" for f in ("base.seed", "base.lr", "space.lr.uniform[1]")} <= set(err.split())
    assert main(["validate", str(tmp_path / "missing.yaml")]) == 2
    assert main(["validate", "--explain", "penalty"]) == 0
    assert "side_tuning" in capsys.readouterr().out


def test_shipped_specs_validate_without_torch():
    import subprocess
    import sys

    code = ("import sys; from sweeps.cli import main; import glob; "
            "rc = main(['validate', *sorted(glob.glob('sweeps/specs/*.yaml'))]); "
            "assert 'torch' not in sys.modules and 'ray' not in sys.modules, 'heavy import'; sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_validate_and_dry_run_say_how_fuse_and_pack_group_the_configurations_still_to_run(tmp_path, capsys):
    from sweeps.store import RunDir

    spec = _write(tmp_path, "name: g\nbase: {epochs: 1}\nspace: {seed: {grid: [0, 1, 2, 3, 4]}}\npack: 2\n", "pack.yaml")
    assert main(["validate", str(spec)]) == 0
    assert "  pack: 2 — 5 configurations → 3 Ray trials (2 packed units: 2 of 2; 1 configuration alone)\n" in \
        capsys.readouterr().out
    out = tmp_path / "run"   # two configurations finished already: the three left are packed
    for c in planned_configs(load_spec(spec))[:2]:
        RunDir(out).update_record(c["trial_id"], status="completed")
    assert main(["run", str(spec), "--out", str(out), "--dry-run"]) == 0
    assert "  pack: 2 — 3 configurations → 2 Ray trials (1 packed unit: 1 of 2; 1 configuration alone)\n" in \
        capsys.readouterr().out
    fused = _write(tmp_path, "name: f\nbase: {epochs: 1}\nspace: {seed: {grid: [0, 1, 2]}}\nfuse: 2\n", "fuse.yaml")
    assert main(["validate", str(fused)]) == 0
    assert "  fuse: 2 — 3 configurations → 1 fused trials" in capsys.readouterr().out
    plain = _write(tmp_path, "name: p\nbase: {epochs: 1}\nspace: {seed: {grid: [0, 1]}}\n", "plain.yaml")
    assert main(["validate", str(plain)]) == 0 and "pack:" not in capsys.readouterr().out


def _arm_spec(dataset: dict, *arms: dict) -> dict:
    return spec_with(dataset=dataset, base__method="gc_reg", scheduler=None, search={"algorithm": "grid"},
                     space={"method_options": {"grid": list(arms)}})


def test_a_transfer_arm_the_dataset_cannot_build_is_refused_before_any_trial():
    shapes_fine = {"name": "biased_shapes", "options": {"target": "fine", "n_train": 64}}
    ok = {"target_arm": "compatible", "n_source": 4, "n_target": 3}
    parse_spec(_arm_spec(shapes_fine, ok, {**ok, "target_arm": "incompatible"}))
    # no class families: the binary target, the digit scans
    for ds in ({"name": "biased_shapes"}, {"name": "colored_digits", "options": {"target": "digit"}}):
        lines = refused(_arm_spec(ds, ok))
        assert len(lines) == 1 and "method_options.target_arm" in lines[0] and "needs class families" in lines[0]
        assert "target_arm: first" in lines[0]
    # families too small for the arm: 4 targets leave one free family of 2 for an incompatible source of 4
    lines = refused(_arm_spec(shapes_fine, {**ok, "target_arm": "incompatible", "n_target": 4}))
    assert len(lines) == 1 and "at most 2" in lines[0] and "lower n_source or n_target" in lines[0]


def test_the_declared_class_hierarchy_is_the_one_the_data_have():
    import numpy as np

    from nccore.catalogue import CLASS_HIERARCHY
    from nccore.data import build_dataset
    from nccore.transfer_arms import class_families

    tr = build_dataset("biased_shapes", {"target": "fine", "n_train": 200, "n_val": 20, "n_test": 20}, seed=0)
    fams = class_families(tr.splits["train"].y.numpy(), tr.splits["train"].coarse.numpy())
    sizes = np.bincount(list(fams.values()))
    assert (len(sizes), int(sizes[0])) == CLASS_HIERARCHY["biased_shapes"]["fine"] and len(set(sizes)) == 1


def _study_spec(dataset: dict, **blocks) -> dict:
    return spec_with(dataset=dataset, scheduler=None, search={"algorithm": "grid"}, space={"seed": {"grid": [0]}},
                     study={"name": "dfr", "primary": {"dfr_vs_erm": {"direction": "positive", "margin": 0.02}},
                            **blocks})


def test_a_study_name_or_finding_id_that_does_not_exist_is_refused_before_the_run():
    shapes = {"name": "biased_shapes", "options": {"n_train": 64}}
    one({**_study_spec(shapes), "study": {"name": "dfrr", "primary": {"x": {"direction": "positive", "margin": 0.1}}}},
        "study.name", "not a study", "`dfr`")
    one(_study_spec(shapes, secondary={"minority_gian": {"direction": "positive", "margin": 0.02}}),
        "study.secondary.minority_gian", "not a finding of study 'dfr'", "`minority_gain`")


def test_a_finding_the_dataset_cannot_measure_is_refused():
    """Saliency findings need a pixel mask of the spurious attribute; arm findings need class families."""
    shapes = {"name": "biased_shapes", "options": {"n_train": 64}}
    sal = {"saliency_shift": {"direction": "positive", "margin": 0.02}}
    parse_spec(_study_spec(shapes, secondary=sal))                                  # BiasedShapes has the mask
    line = one(_study_spec({"name": "colored_digits"}, secondary=sal), "study.secondary.saliency_shift",
               "pixel mask", "'colored_digits'", "drop the finding")
    assert "biased_shapes" in line
    arm = {"name": "gc_transfer", "primary": {"gc_fewshot_rank": {"direction": "negative", "margin": 0.1}},
           "manipulation": {"arm_fewshot_gap": {"direction": "positive"}}}
    parse_spec({**_study_spec({"name": "biased_shapes", "options": {"target": "fine"}}), "study": arm})
    one({**_study_spec(shapes), "study": arm}, "study.manipulation.arm_fewshot_gap", "class families",
        "(target 'binary')")


def test_validate_notes_the_declared_findings_a_plan_cannot_measure():
    import yaml

    from sweeps.validate import summary

    raw = yaml.safe_load(open("sweeps/specs/dfr_last_layer.yaml"))
    assert not [x for x in summary("s", parse_spec(raw)) if "note:" in x]          # the shipped spec measures all
    raw.update(space={"seed": {"grid": [0]}}, variants=[{"method": "dfr"}, {"method": "erm", "bias_level": 0.0}])
    notes = [x for x in summary("s", parse_spec(raw)) if "note:" in x]
    assert len(notes) == 4 and "jtt_vs_erm cannot be measured by this plan: no trial has method = 'jtt'" in notes[0]
    raw = yaml.safe_load(open("sweeps/specs/change_penalty.yaml"))
    raw["space"]["method_options"] = {"grid": raw["space"]["method_options"]["grid"][:1]}
    raw["variants"] = raw["variants"][:1]                                           # the change penalty only
    notes = [x for x in summary("s", parse_spec(raw)) if "n_interaction" in x]
    assert notes and "method_options.n_tune takes one value (2)" in notes[0]


def test_the_study_declarations_plan_and_needs_name_real_findings_keys_and_needs():
    from nccore.catalogue import CONFIG, METHOD_OPTIONS, dataset_provides
    from sweeps.checks import study_declarations

    provided = set().union(*(dataset_provides(d, t) for d, t in (("biased_shapes", "fine"), ("cifar100", "fine"))))
    options = {o for opts in METHOD_OPTIONS.values() for o in opts}
    for name, d in study_declarations().items():
        for fid, need in (d.get("needs") or {}).items():
            assert fid in d["findings"] and need in provided, (name, fid)
        for fid, plan in (d.get("plan") or {}).items():
            assert fid in d["findings"] and set(plan) <= {"has", "varies"}, (name, fid)
            keys = [k for want in plan.get("has", []) for k in want] + ([plan["varies"]] if "varies" in plan else [])
            for k in keys:
                assert k in CONFIG or (k.startswith("method_options.") and k.split(".", 1)[1] in options), (name, k)
