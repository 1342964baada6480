"""`ncsweep` — validate, run, resume and inspect sweeps; analyse and report their results.

A sweep is a set of trials (one config each); a trial runs epochs; each epoch writes rows
(one per split and group) to RUN_DIR/rows as Parquet. `ncsweep COMMAND --help` shows a
command's options and an example; start with `ncsweep validate sweeps/specs/demo.yaml`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from nccore.catalogue import did_you_mean
from nccore.config import DEFAULTS

from . import submit, validate, verify
from .driver import run_sweep
from .layout import TERMINAL, mirror
from .lock import describe, unlock
from .logs import show_logs
from .plan import iter_planned_configs
from .spec import SpecError, load_spec, parse_spec
from .stop import Stopped
from .store import RunDir
from .summary import aligned, exit_code, failure_line, status_summary, trial_rows

# One example per command, shown at the end of its --help (tests/test_cli.py checks each runs or parses).
EXAMPLES = {
    "validate": "ncsweep validate sweeps/specs/demo.yaml\n  ncsweep validate --explain worst_group_acc    # one key, option or metric",
    "run": "ncsweep run sweeps/specs/demo.yaml --out runs/demo\n"
           "  ncsweep run sweeps/specs/demo.yaml --out runs/demo --dry-run    # the plan, without Ray",
    "resume": "ncsweep resume runs/demo\n  ncsweep resume runs/demo --dry-run    # what is left to run, without Ray",
    "status": "ncsweep status runs/demo\n  ncsweep status runs/demo --json | python -m json.tool\n"
              "  ncsweep status runs/demo --trials    # one line per trial: swept values, latest metric",
    "logs": "ncsweep logs runs/demo              # the driver's log\n"
            "  ncsweep logs runs/demo 3f2a        # one trial (any unique prefix of its id)",
    "keys": "ncsweep keys",
    "verify": "ncsweep verify runs/demo",
    "repair": "ncsweep repair runs/demo    # then `ncsweep resume runs/demo` re-runs what was re-planned",
    "unlock": "ncsweep unlock runs/demo    # after its driver's host died; refused while the lock is live",
    "submit": "ncsweep submit sweeps/specs/demo.yaml --address http://HEAD:8265 --out /mnt/shared/runs/demo",
    "analyze": "ncsweep analyze runs/demo --select best:worst_group_acc",
    "report": "ncsweep report runs/demo    # then open runs/demo/report/report.html",
    "study": "ncsweep study runs/nc_fairness_label_bias    # the study's verdicts (docs/studies-collapse.md)",
}
# Help for the arguments every command names the same way (used where a command gives none).
ARG_HELP = {"dir": "a run directory, e.g. runs/demo", "spec": "a YAML sweep spec, e.g. sweeps/specs/demo.yaml"}


def package_version() -> str:
    try:
        return version("ncsweep")
    except PackageNotFoundError:   # running from a source tree that was never installed
        return "unknown"


def _resources(text: str | None) -> dict | None:
    if not text:
        return None
    out = {}
    for part in text.split(","):
        k, _, v = part.partition("=")
        if k.strip() not in ("cpu", "gpu") or not v:
            raise SpecError(f"--resources {text!r}: expected e.g. cpu=1,gpu=0.25")
        out[k.strip()] = float(v)
    return out


def _run_dir(path: str):
    store = RunDir(path)
    try:
        manifest = store.read_manifest()
    except OSError as e:
        raise OSError(f"{path}: cannot read its manifest.json: {e}") from e
    if manifest is None:
        raise SpecError(f"{path}: no manifest.json — not an ncsweep run directory "
                        f"(start one with `ncsweep run SPEC --out {path}`)")
    return store


# ---------------------------------------------------------------------- commands
def _report_summary(s: dict) -> int:
    counts = ", ".join(f"{n} {status}" for status, n in sorted(s["counts"].items()))
    print(f"results: {s['run_dir']}  ({s['finished']}/{s['planned']} trials finished, "
          f"{s['pending']} pending; {counts or 'no trials yet'})")
    for tid, err in s["failures"].items():
        print(f"  failed {tid}: {err}  (details: ncsweep logs {s['run_dir']} {tid})")
    if failure_line(s):   # exit 1 when trials failed
        print(failure_line(s))
    return exit_code(s)


def plan_text(spec, out: str, resources: dict | None) -> str:
    """What `ncsweep run --dry-run` prints: the trials, epochs and resources a run would use."""
    lines = [f"sweep {spec.name!r} → {Path(out).resolve()}"]
    base_epochs = spec.base_config().get("epochs")
    if spec.search["algorithm"] == "optuna":
        lines.append(f"  trials: {spec.search['num_samples']} sampled by Optuna TPE on {spec.search['metric']} "
                     f"({spec.search['mode']})")
    else:
        recs = RunDir(out).records()   # none yet if the directory does not exist
        n = done = epochs = 0
        todo = []   # held only to say how fuse/pack group them (the driver holds them then too)
        for c in iter_planned_configs(spec):   # one at a time: a plan above the cap is never held
            n += 1
            finished = (recs.get(c["trial_id"]) or {}).get("status") in TERMINAL
            done += finished
            epochs += int(c.get("epochs") or base_epochs or DEFAULTS["epochs"])
            if not finished and (spec.fuse or spec.pack):
                todo.append(c)
        lines.append(f"  trials: {n} planned ({spec.search['algorithm']}), {done} already finished "
                     f"in this directory, {n - done} to run; {epochs} epochs in all")
        lines += validate.grouping(spec, todo)
    axes = sorted({k for space in spec.subspaces() for k in space})
    lines.append(f"  swept keys: {', '.join(axes) or 'none'}")
    lines.append(f"  per trial: {({**spec.resources, **(resources or {})})}, max concurrent "
                 f"{spec.max_concurrent or 'as resources allow'}, retries {spec.retries}")
    if spec.scheduler:
        lines.append(f"  scheduler: ASHA on {spec.scheduler['metric']} ({spec.scheduler['mode']})")
    lines.append(f"  loggers: {', '.join(spec.loggers) or 'none'}")
    lines.append("dry run: nothing started (drop --dry-run to run it)")
    return "\n".join(lines)


def cmd_run(a) -> int:
    spec = load_spec(a.spec, allow_large=a.allow_large)
    out = a.out or str(Path("runs") / spec.name)
    if a.dry_run:
        print(plan_text(spec, out, _resources(a.resources)))
        return 0
    s = run_sweep(spec, out, a.address, _resources(a.resources))
    print(f"sweep {spec.name!r} finished in {s['wall_s']:.1f}s (Ray start {s['ray_init_s']:.1f}s)")
    if s.get("mean_tune_trial_s") and s.get("mean_run_trial_s"):
        print(f"per trial: {s['mean_tune_trial_s']:.2f}s in Tune, {s['mean_run_trial_s']:.2f}s inside run_trial "
              f"(overhead {s['mean_tune_trial_s'] - s['mean_run_trial_s']:.2f}s)")
    return _report_summary(s)


def cmd_resume(a) -> int:
    m = _run_dir(a.dir).read_manifest()
    spec = parse_spec(m["spec"], default_name=m["name"])
    if a.dry_run:
        print(plan_text(spec, a.dir, m.get("resources")))
        return 0
    s = run_sweep(spec, a.dir, a.address, m.get("resources"))
    print(f"sweep {spec.name!r} resumed and finished in {s['wall_s']:.1f}s")
    return _report_summary(s)


def cmd_status(a) -> int:
    s = status_summary(_run_dir(a.dir))
    if a.json:
        print(json.dumps(s, indent=1, default=str))
        return 0
    _report_summary(s)
    print(f"  {s['epochs']} epochs run, {s['rows']} rows written ({s['files']} result files)")
    if s["uncounted_files"]:
        print(f"  {s['uncounted_files']} result files are not counted in any trial record (written by an "
              "older ncsweep or by hand): not opened here; `ncsweep analyze` reads them")
    for p in s["problems"]:
        print(f"  problem: {p['what']}: {p['detail']} (`ncsweep repair {a.dir}`: {p['fix']})")
    if s["mean_trial_wall_s"] is not None:
        print(f"  mean trial wall {s['mean_trial_wall_s']:.1f}s, mean overhead {(s['mean_trial_overhead_s'] or 0):.2f}s")
    if a.trials:
        header, rows = trial_rows(_run_dir(a.dir))
        print(aligned(header, rows) if rows else "  no trial records yet")
    return 0


def cmd_unlock(a) -> int:
    info = unlock(a.dir, force=a.force)
    if info is None:
        print(f"{a.dir}: not locked")
    else:
        print(f"{a.dir}: removed the lock of {describe(info) if info else 'an unreadable lock file'}")
    return 0


def cmd_logs(a) -> int:
    print(show_logs(a.dir, a.trial))
    return 0


def cmd_analyze(a) -> int:
    from analysis.cli import analyze   # pandas, duckdb, statsmodels: loaded for analysis commands only

    return analyze(a.dir, a.select, a.metrics, a.include_status, a.correction, a.interactions, out=a.out,
                   rank_by=a.rank_by, strict=a.strict)


def cmd_study(a) -> int:
    from analysis.studies import study_command

    return study_command(str(mirror(a.dir)))   # a run directory on an object store: its local mirror


def cmd_report(a) -> int:
    from analysis.cli import report

    return report(a.dir, a.select, a.metrics, a.include_status, a.correction, a.interactions, out=a.out,
                  rank_by=a.rank_by, top=a.top, strict=a.strict)


# ---------------------------------------------------------------------- the parser
# Arguments several commands share, as (names, argparse keywords).
SPEC = (("spec",), {})
DIR = (("dir",), {})
ADDRESS = (("--address",), {"help": "an existing Ray cluster, from one of its nodes: `auto` or HEAD:6379 (from elsewhere "
                                     "use `ncsweep submit`; ray:// is refused)"})
JSON = (("--json",), {"action": "store_true", "help": "print the result as JSON (for scripts)"})


def command(sub, name: str, fn, help_: str, *arguments) -> argparse.ArgumentParser:
    """Register `ncsweep NAME` running fn(args), with arguments given as (names, keywords) pairs."""
    p = sub.add_parser(name, help=help_)
    for names, kw in arguments:
        p.add_argument(*names, **kw)
    p.set_defaults(fn=fn)
    return p


def add_core_commands(sub) -> None:
    validate.add_parser(sub)   # `ncsweep validate|keys` (sweeps/validate.py)
    command(sub, "run", cmd_run, "run a sweep: every planned trial not yet finished in --out", SPEC,
            (("--out",), {"help": "the run directory (default: runs/<spec name>); run again to continue it"}),
            ADDRESS,
            (("--resources",), {"help": "per-trial resources overriding the spec's, e.g. cpu=1,gpu=0.25"}),
            (("--dry-run",), {"action": "store_true",
                              "help": "validate and print the plan (trials, epochs, resources) without starting Ray"}),
            (("--allow-large",), {"action": "store_true", "help": "accept a plan above the trial cap (see docs/spec.md)"}))
    command(sub, "resume", cmd_resume, "finish an interrupted run directory with the spec stored in it", DIR, ADDRESS,
            (("--dry-run",), {"action": "store_true", "help": "print what a resume would run, without starting Ray"}))
    command(sub, "status", cmd_status, "trials finished, running and failed; epochs and rows written", DIR, JSON,
            (("--trials",), {"action": "store_true",
                             "help": "also one line per trial: status, epochs, swept values, latest headline metric"}))
    command(sub, "unlock", cmd_unlock, "remove a run directory's lock left by a driver that is gone (any host)", DIR,
            (("--force",), {"action": "store_true",
                            "help": "remove it even if its heartbeat is fresh (only when you know that driver is gone)"}))
    command(sub, "logs", cmd_logs, "the driver's log (RUN_DIR/ncsweep.log), or one trial's error and log lines", DIR,
            (("trial",), {"nargs": "?", "help": "a trial id or a unique prefix of one (see `ncsweep status`)"}))


def add_analysis_commands(sub) -> None:
    helps = {"analyze": "sensitivity tables and architecture comparisons into DIR/analysis",
             "report": "the HTML + Markdown report into DIR/report (tables into DIR/analysis)"}
    for name, fn in (("analyze", cmd_analyze), ("report", cmd_report)):
        an = sub.add_parser(name, help=helps[name])
        an.add_argument("dir", nargs="+", help="one or more run directories, analysed together")
        an.add_argument("--select", default="final",
                        help="which epoch of each trial: final, or best:<val metric>, e.g. best:worst_group_acc")
        an.add_argument("--metrics", default=None, help="comma-separated metric columns, e.g. val_acc,val_nc1")
        an.add_argument("--include-status", default=None, help="trial statuses used in effect fits besides "
                        "completed, e.g. stopped,diverged (default: completed only)")
        an.add_argument("--correction", default="holm", choices=["none", "holm", "bh"],
                        help="multiple-comparison correction of each table's p-values (default holm)")
        an.add_argument("--interactions", default=None, help="pairwise interactions to fit: AXIS:AXIS,... or all")
        an.add_argument("--rank-by", default=None, help="the validation metric the leaderboard ranks configurations "
                        "on, e.g. val_worst_group_acc (default: the validation twin of the reported test metric)")
        if name == "report":
            an.add_argument("--top", type=int, default=10, help="leaderboard rows per data condition shown in the "
                            "report (default 10; leaderboard.csv keeps every row)")
        an.add_argument("--strict", action="store_true", help="a result file that differs from the checksum in "
                        "its trial record is an error (exit 2), not a warning")
        an.add_argument("--out", default=None, help="write every file of the command into this folder (default: "
                        "DIR/analysis and DIR/report; for several runs, a new folder beside them named after them, "
                        "e.g. runs/a+runs/b → runs/a+b/analysis)")
        an.set_defaults(fn=fn)
    command(sub, "study", cmd_study, "the verdicts of the run's study (its spec's `study:` block): primary outcome, "
            "secondary outcomes, manipulation checks, Holm-corrected", DIR)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ncsweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"ncsweep {package_version()}",
                   help="print the ncsweep version and exit")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    add_core_commands(sub)
    submit.add_parser(sub)     # `ncsweep submit` (sweeps/submit.py)
    verify.add_parser(sub)     # `ncsweep verify|repair` (sweeps/verify.py)
    add_analysis_commands(sub)
    for name, parser in sub.choices.items():
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        if name in EXAMPLES and not parser.epilog:
            parser.epilog = "example:\n  " + EXAMPLES[name]
        for action in parser._actions:
            if action.help is None and action.dest in ARG_HELP:
                action.help = ARG_HELP[action.dest]
    return p


def _unknown_command(p: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """argparse lists the choices for a mistyped command; say which one was probably meant."""
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    first = next((x for x in argv if not x.startswith("-")), None)
    if first is None or first in sub.choices:
        return None
    return f"unknown command {first!r}; {did_you_mean(first, sub.choices)} (see ncsweep --help)"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = build_parser()
    bad = _unknown_command(p, argv)
    if bad:
        print(f"ncsweep: error: {bad}", file=sys.stderr)
        return 2
    a = p.parse_args(argv)
    try:
        code = a.fn(a)
        sys.stdout.flush()        # here, so that a closed pipe is caught below and not at exit
        return code
    except BrokenPipeError:       # `ncsweep keys --metrics | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141                # as a program ended by SIGPIPE
    except (SpecError, ValueError, FileNotFoundError) as e:
        print(f"ncsweep: error: {e}", file=sys.stderr)
        return 2
    except Stopped as e:          # SIGTERM (exit 143) or a lost lock: the message says how to resume
        print(f"ncsweep: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:          # storage: permissions, a full disk, an object store that does not answer
        hint = "; check the endpoint (AWS_ENDPOINT_URL) and credentials (AWS_* variables)" if "AWS Error" in str(e) else ""
        print(f"ncsweep: error: {e}{hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
