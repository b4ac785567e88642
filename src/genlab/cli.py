"""The ``genlab`` command: list, run STUDY, reproduce, report, diagnose, bench.

``genlab run STUDY`` has one flag per field of the study's spec (generated from the pydantic
model, as open_lth does with its dataclasses), so every setting can come from flags or from a
TOML file (``--config``). Errors a user can cause print one line and exit with code 2.
"""
from __future__ import annotations

import sys
import typing
from pathlib import Path
from typing import Any

import click

from genlab.errors import UserError


def _type_name(annotation) -> str:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (list, tuple):
        return f"LIST[{_type_name(args[0]) if args else 'STR'}]"
    if typing.get_origin(annotation) is typing.Literal:
        return "CHOICE"
    if args:
        return _type_name(args[0])
    return getattr(annotation, "__name__", "VALUE").upper()


def spec_options(spec_cls, extra_help: dict[str, str] | None = None) -> list[click.Option]:
    """One click option per setting of the spec (its flat name; older names as aliases), ``extra_help``
    added to the help of the settings it names. Values stay strings for pydantic to convert and check."""
    from genlab.spec.fields import choices

    options = []
    quick = {spec_cls.aliases.get(k, k): v for k, v in spec_cls.presets.get("quick", {}).items()}
    old_names: dict[str, list[str]] = {}
    for old, new in spec_cls.aliases.items():
        old_names.setdefault(new, []).append(old)
    for name, field in spec_cls.flat_fields().items():
        flags = ["--" + n.replace("_", "-") for n in (name, *old_names.get(name, []))]
        default = quick.get(name, field.default_in(spec_cls))
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        allowed = choices(field.info)
        help_text = (spec_cls.help_texts.get(name) or field.info.description or "") + \
            (f" ({extra_help[name]})" if extra_help and name in extra_help else "") + \
            (f" [choices: {', '.join(allowed)}]" if allowed else "") + f" [quick default: {shown}]"
        if field.annotation is bool:
            options.append(click.Option([f"{flags[0]}/--no-{name.replace('_', '-')}", name], default=None,
                                        help=help_text))
        else:
            options.append(click.Option([*flags, name], default=None, metavar=_type_name(field.annotation),
                                        help=help_text))
    return options


def parse_flag_values(spec_cls, values: dict[str, Any]) -> dict[str, Any]:
    """Turn flag strings into what the spec expects: lists split on commas, 'none' to None."""
    fields = spec_cls.flat_fields()
    out: dict[str, Any] = {}
    for name, value in values.items():
        if value is None or name not in fields:
            continue
        if isinstance(value, str) and value.lower() in ("none", "null"):
            out[name] = None
        elif fields[name].is_list:
            out[name] = [v.strip() for v in str(value).split(",") if v.strip()]
        else:
            out[name] = value
    return out


COMMON = {"out", "config", "force_new", "quiet", "executor", "address"}


def _run_options(f):
    for opt in reversed([
        click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="run folder (default: runs/STUDY); re-running the same command resumes it"),
        click.option("--config", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="TOML file with spec fields (flags override it)"),
        click.option("--force-new", is_flag=True, default=False,
                     help="start over in the run folder, whatever it holds (the old run is moved aside to "
                     "DIR.old-TIMESTAMP)"),
        click.option("--quiet", is_flag=True, default=False, help="no progress display"),
        click.option("--executor", type=click.Choice(["local", "ray"]), default="local",
                     help="where units run: in this process, or as Ray tasks"),
        click.option("--address", default=None, help="Ray cluster address (default: start a local Ray instance)"),
    ]):
        f = opt(f)
    return f


PRECISIONS = ("fp32", "bf16", "fp16")


def _precision_options(study) -> tuple[dict[str, str], list[click.Option]]:
    """The --help additions of the study's training-precision settings (what keeps its own precision),
    and a ``--precision`` that sets them all when the study has several (double descent's sweeps)."""
    from genlab.run.precision import precision_settings

    names = precision_settings(study.Spec)
    extra = {name: f"here {study.own_precision}" for name in names if study.own_precision}
    if not names or "precision" in names:
        return extra, []
    return extra, [click.Option(["--precision", "all_precision"], type=click.Choice(PRECISIONS), default=None,
                                help=f"training precision of every network sweep (sets {', '.join(names)} unless "
                                     f"given){'; ' + study.own_precision if study.own_precision else ''}")]


def _study_command(study) -> click.Command:
    def callback(**kwargs):
        from rich.console import Console

        from genlab.run.precision import precision_settings, slow_precision_notes
        from genlab.spec import resolve_spec

        shared = kwargs.pop("all_precision", None)
        overrides = parse_flag_values(study.Spec, {k: v for k, v in kwargs.items() if k not in COMMON})
        if shared is not None:
            overrides = {**{name: shared for name in precision_settings(study.Spec)}, **overrides}
        spec = resolve_spec(study.Spec, None, kwargs["config"], overrides)
        for note in slow_precision_notes([spec]):
            Console(stderr=True).print(note)
        out = kwargs["out"] or Path("runs") / study.name
        run_and_summarize(study, spec, out, quiet=kwargs["quiet"], force_new=kwargs["force_new"],
                          executor=kwargs["executor"], address=kwargs["address"])

    extra_help, shorthand = _precision_options(study)
    cmd = click.Command(study.name, callback=callback, params=spec_options(study.Spec, extra_help) + shorthand,
                        help=f"{study.title}.\n\n{study.question}\n\nReference: {study.citation}.",
                        short_help=study.title)
    return _run_options(cmd)


def duration(seconds: float) -> str:
    """An estimated time as a reader says it: "under a second", "about 40 seconds", "about 12
    minutes", "about 2.8 hours"."""
    if seconds < 1:
        return "under a second"
    if seconds < 90:
        return f"about {seconds:.0f} seconds"
    if seconds < 90 * 60:
        return f"about {seconds / 60:.0f} minutes"
    return f"about {seconds / 3600:.1f} hours"


def run_and_summarize(study, spec, out: Path, quiet=False, force_new=False, executor="local", address=None):
    from rich.console import Console

    from genlab.collector import imports_frozen
    from genlab.progress import make_progress
    from genlab.run.runner import run_study

    console = Console(stderr=True)
    estimate = study.estimate_seconds(spec) if spec.preset == "paper" and not quiet else None
    if estimate:
        console.print(f"[bold]{study.name}[/]: the {spec.preset} preset is expected to take "
                      f"{duration(estimate)} on a 2-core CPU.")
    with imports_frozen(), make_progress(study.name, len(study.units(spec)), quiet=quiet) as progress:
        store = run_study(study, spec, out, progress=progress, force_new=force_new, executor=executor, address=address)
    if not quiet:
        print_summary(study, spec, store, Console())
    return store


def print_summary(study, spec, store, console) -> None:
    from rich.table import Table

    from genlab.report.build import precision_note
    from genlab.studies.cifar import with_cifar_references

    results, curves = store.results(), store.curves()
    summary = with_cifar_references(study, results, curves, spec)
    cols = [c for c in study.result_columns if c in results.columns]
    table = Table(title=f"{study.name}: {store.path / 'results.csv'}", show_lines=False)
    for c in cols:
        table.add_column(c, justify="right" if results[c].dtype.kind in "fiu" else "left")
    shown = results[cols].head(40)
    for _, row in shown.iterrows():
        table.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row])
    console.print(table)
    if len(results) > len(shown):
        console.print(f"... {len(results) - len(shown)} more rows in results.csv")
    console.print(f"[bold]verdict:[/] {summary.verdict}")
    for text, ok in summary.checks:
        console.print(f"  [{'green' if ok else 'red'}]{'PASS' if ok else 'FAIL'}[/] {text}")
    if precision_note(summary, spec):
        console.print(precision_note(summary, spec))
    manifest = store.read_manifest() or {}
    console.print(f"figures: {', '.join(manifest.get('figures', []))} in {store.path}")


class RunGroup(click.Group):
    """``genlab run STUDY``: one subcommand per registered study."""

    def list_commands(self, ctx):
        from genlab.studies import STUDIES

        return list(STUDIES)

    def get_command(self, ctx, name):
        from genlab.studies import STUDIES

        if name not in STUDIES:
            raise UserError(f"unknown study {name!r}; choose one of: {', '.join(STUDIES)}")
        return _study_command(STUDIES[name])


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="genlab")
def cli():
    """genlab: is this deep network overfitted, and why does it generalize anyway?

    Runs the experiments of the literature (randomization tests, expressivity, double descent,
    intrinsic dimension, layer robustness, lottery tickets, description length and
    generalization measures) on real data, batched, reproducibly, on a CPU.
    """


@cli.command("list")
def list_cmd():
    """List the studies, datasets and models, one line each."""
    from rich.console import Console
    from rich.table import Table

    from genlab.data import DATASETS
    from genlab.models import MODELS, param_count
    from genlab.studies import STUDIES

    def params(name: str) -> str:
        count = param_count(name)
        return "-" if count is None else f"{count:,}"

    console = Console()
    for title, rows in (("studies (genlab run NAME)", [(s.name, s.title) for s in STUDIES.values()]),
                        ("datasets (--dataset NAME)", [(d.name, d.summary) for d in DATASETS.values()]),
                        ("models (--model NAME; parameters on CIFAR-10 [3, 32, 32] with default options)",
                         [(m.name, params(m.name), m.summary) for m in MODELS.values()])):
        table = Table(title=title, show_header=False, title_justify="left", box=None)
        table.add_column(style="bold")
        for _ in rows[0][1:]:
            table.add_column()
        for row in rows:
            table.add_row(*row)
        console.print(table)


@cli.command("reproduce")
@click.option("--preset", type=click.Choice(["quick", "paper", "smoke", "cifar"]), default="quick", show_default=True,
              help="quick: every study in minutes on a laptop CPU; paper: settings close to the papers (hours); "
                   "smoke: tiny sizes that only exercise the pipeline; cifar: the papers' CIFAR-10 experiments (a GPU, "
                   "--data-root)")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("report"), show_default=True,
              help="folder for the study runs (DIR/STUDY) and DIR/report.html; re-running continues it")
@click.option("--data-root", type=click.Path(path_type=Path), default=None,
              help="folder holding the dataset files (cifar-10-batches-py/ or cifar-10-python.tar.gz) for every study")
@click.option("--only", default=None, help="comma-separated studies to run (default: all)")
@click.option("--dataset", default=None, help="dataset for every study that takes one (default: each study's own)")
@click.option("--device", default=None, help="torch device for every study (default: cpu)")
@click.option("--precision", type=click.Choice(PRECISIONS), default=None,
              help="training precision of every study that trains networks (default: each study's own, fp32); "
                   "methods that need exactness keep theirs (the report names them)")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="studies run at once, each in its own process with cores/JOBS intra-op threads (default: one per "
                   "core on a CPU, at most 4; 1 on a GPU)")
@click.option("--quiet", is_flag=True, default=False, help="no progress display")
def reproduce_cmd(preset, out, data_root, only, dataset, device, precision, jobs, quiet):
    """Run every study and write DIR/report.html (the main job)."""
    from genlab.collector import imports_frozen
    from genlab.reproduce import reproduce

    with imports_frozen():
        reproduce(out, preset=preset, only=only.split(",") if only else None, dataset=dataset, device=device,
                  quiet=quiet, data_root=data_root, precision=precision, jobs=jobs)


@cli.command("report")
@click.argument("directory", type=click.Path(path_type=Path))
def report_cmd(directory):
    """Rebuild DIR/report.html and every figure from the stored results only (no training)."""
    from genlab.report import build_report

    path = build_report(directory)
    click.echo(f"wrote {path}")


@cli.command("diagnose")
@click.option("--model", "model_path", required=True, metavar="PKG.MODULE:FACTORY",
              help="a function returning the untrained model (imported from the current folder or installed)")
@click.option("--weights", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="the trained state_dict (torch.save(model.state_dict(), PATH)); read with weights_only=True")
@click.option("--record", type=click.Path(path_type=Path), default=None,
              help="folder written by genlab.Recorder during training (adds init distances, epochs, re-init)")
@click.option("--dataset", default=None, help="a registered dataset (genlab list) the model was trained on")
@click.option("--data", "data_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help=".npz with arrays x_train, y_train, x_test, y_test (instead of --dataset)")
@click.option("--n-train", type=int, default=None, help="with --dataset: training examples (default: all)")
@click.option("--n-test", type=int, default=None, help="with --dataset: test examples (default: all)")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("diagnosis"),
              show_default=True, help="folder for report.html, figures/ and the numbers")
@click.option("--budget", type=click.Choice(["quick", "full", "retrain"]), default="quick", show_default=True,
              help="quick/full: no retraining (full: all points, more draws); retrain: also the randomization test")
@click.option("--retrain-epochs", type=click.IntRange(min=1), default=30, show_default=True,
              help="with --budget retrain: epochs per retrained model of the randomization test at most")
@click.option("--retrain-parts", default=None, metavar="PART,...",
              help="with --budget retrain: which retraining to run (default all: randomization, description_length, "
                   "intrinsic_dim, lottery)")
@click.option("--retrain-examples", type=int, default=1000, show_default=True,
              help="with --budget retrain: training examples the description length, intrinsic dimension and "
                   "lottery ticket retrain on (a seeded subset)")
@click.option("--init", default="default", show_default=True,
              help="initializer layers are re-randomized from (default: PyTorch's)")
@click.option("--seed", type=int, default=0, show_default=True, help="fixes every random choice")
def diagnose_cmd(model_path, weights, record, dataset, data_file, n_train, n_test, out, budget, retrain_epochs,
                 retrain_parts, retrain_examples, init, seed):
    """Is my model overfitted? Diagnose a network trained anywhere; write OUT/report.html."""
    from genlab.diagnosis import diagnose
    from genlab.diagnosis.inputs import build, load_factory, load_npz, load_weights

    if (dataset is None) == (data_file is None):
        raise UserError("give exactly one of --dataset NAME or --data FILE.npz")
    factory = load_factory(model_path)
    model = load_weights(build(factory, f"--model {model_path}"), weights)
    if data_file is not None:
        train, test = load_npz(data_file)
        name = data_file.name
    else:
        from genlab.data.registry import load_dataset

        d = load_dataset(dataset, n_train=n_train, n_test=n_test)
        train, test, name = (d.x_train, d.y_train), (d.x_test, d.y_test), dataset
    source = f"--data {data_file}" if data_file is not None else f"--dataset {dataset}" + "".join(
        f" --{flag} {value}" for flag, value in (("n-train", n_train), ("n-test", n_test)) if value is not None)
    command = (f"genlab diagnose --model {model_path} --weights {weights}" + (f" --record {record}" if record else "")
               + f" {source} --out {out} --budget {budget} --init {init} --seed {seed}"
               + (f" --retrain-epochs {retrain_epochs} --retrain-examples {retrain_examples}" if budget == "retrain"
                  else "") + (f" --retrain-parts {retrain_parts}" if retrain_parts else ""))
    result = diagnose(model, train, test, record=record, out=out, budget=budget, factory=factory, init=init,
                      seed=seed, retrain_epochs=retrain_epochs, retrain_parts=retrain_parts,
                      retrain_examples=retrain_examples, dataset=name, command=command)
    click.echo(result.answer.verdict)
    click.echo(f"wrote {result.report}")


def benchmarks_dir() -> Path:
    """The repository's ``benchmarks/`` folder (beside ``src/``): the bench is a tool of a clone."""
    import genlab

    folder = Path(genlab.__file__).resolve().parents[2] / "benchmarks"
    if not (folder / "bench.py").exists():
        raise UserError("genlab bench runs from a clone of the genlab repository (benchmarks/ not found beside src/)")
    return folder


@cli.command("bench")
@click.option("--quick", is_flag=True, default=False, help="one run per side and one epoch: checks the bench, not "
              "speed")
@click.option("--only", default=None, help="comma-separated training workloads (default: every row)")
@click.option("--precision", default="fp32", show_default=True, help="comma-separated precisions: fp32, bf16")
@click.option("--repeats", type=click.IntRange(min=1), default=None,
              help="rounds of both sides per workload [default: 3, or 1 with --quick]")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench/bench.json"),
              show_default=True,
              help="JSON results; a Markdown table is written beside it (.md)")
def bench_cmd(quick, only, precision, repeats, out):
    """Time genlab's engine against the plain one-model-at-a-time PyTorch loop (benchmarks/)."""
    import runpy

    for value in precision.split(","):
        if value not in ("fp32", "bf16"):
            raise UserError(f"invalid value for '--precision': {value!r}; choose from fp32, bf16")
    bench = runpy.run_path(str(benchmarks_dir() / "bench.py"))
    for name in (only.split(",") if only else []):
        if name not in bench["WORKLOADS"]:
            raise UserError(f"invalid value for '--only': unknown workload {name!r}; choose from "
                            f"{', '.join(bench['WORKLOADS'])}")
    report = bench["run_bench"](out, quick, only.split(",") if only else None, tuple(precision.split(",")), repeats)
    click.echo(bench["markdown_table"](report, "genlab bench"))


cli.add_command(RunGroup("run", help="Run one study: genlab run STUDY [flags] --out DIR (see genlab run STUDY "
                         "--help)."))


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors become one line on stderr and exit code 2."""
    try:
        rv = cli.main(args=argv, prog_name="genlab", standalone_mode=False)
        return int(rv) if isinstance(rv, int) else 0
    except UserError as exc:
        click.echo(f"genlab: error: {exc}", err=True)
        return _exit(2)
    except click.UsageError as exc:
        click.echo(f"genlab: error: {exc.format_message()}", err=True)
        return _exit(2)
    except click.exceptions.Exit as exc:
        return _exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("genlab: interrupted; run the same command again to resume", err=True)
        return _exit(130)


def _exit(code: int) -> int:
    sys.exit(code)


if __name__ == "__main__":
    main()
