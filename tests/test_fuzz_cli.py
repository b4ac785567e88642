"""Bad input never ends in a traceback (issue #16 part 2): the CLI, fuzzed.

* flag values of every study, drawn from each spec field's type and bounds: at and beyond the
  bounds, nan/inf, negative, huge, empty lists, wrong types, unknown names;
* random text and random bytes as the ``--config`` TOML file;
* truncated, emptied, garbled, mistyped or deleted files of a finished run folder, then the run's
  command again (resume) and ``genlab report``.

Every case must end in exit code 2 with one line (no traceback), or in a correct run. The CLI runs
in-process (``genlab.cli.main``). The default profile is small; ``-m slow`` runs a bigger one.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import typing
from pathlib import Path

import annotated_types as at
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genlab.cli import main
from genlab.errors import UserError
from genlab.spec import resolve_spec
from genlab.studies import STUDIES

BUDGET_SECONDS = 8  # an accepted spec that is still training after this long counts as a correct run
OUTCOMES: dict[str, int] = {}


class StillRunning(BaseException):
    """The budget ran out while an accepted spec trained (no error so far)."""


def run_cli(args: list[str], capsys, budget: float | None = None) -> tuple[int | str, str]:
    """(exit code or 'running', stderr) of ``genlab ARGS``; any other exception fails the test.

    With a ``budget``, a training still going after that many seconds is stopped at its next epoch
    (a safe point: never inside an import or a write) and counted as a correct run so far.
    """
    import time

    import genlab.progress as progress

    real_epoch = progress.NullProgress.epoch
    deadline = time.monotonic() + budget if budget else None

    def epoch(self, trainer):
        if deadline is not None and time.monotonic() > deadline:
            raise StillRunning()
        real_epoch(self, trainer)

    progress.NullProgress.epoch = epoch
    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    except StillRunning:
        code = "running"
    finally:
        progress.NullProgress.epoch = real_epoch
    return code, capsys.readouterr().err


def assert_clear(code, err, needle: str | None = None) -> None:
    assert "Traceback" not in err, err
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("genlab: error: "), err
        if needle:
            assert needle in lines[0], lines[0]
    else:
        assert code in (0, "running"), (code, err)


# ----- values drawn from the spec fields ------------------------------------------------------------
def _bounds(field) -> list[float]:
    out = []
    for m in field.metadata:
        for attr in ("gt", "ge", "lt", "le"):
            if isinstance(m, getattr(at, attr.capitalize())):
                out.append(getattr(m, attr))
    return out


def _base(annotation):
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, getattr(__import__("types"), "UnionType", None)) and args:
        return _base(args[0])
    return annotation


NASTY = ["nan", "inf", "-inf", "", " ", "abc", "1e309", "-0", "0x10", "1_000", "None", "<script>", "../../etc",
         "\u00e9\u00e8", "1,2", "true"]


def scalar_values(annotation, field) -> st.SearchStrategy[str]:
    kind = _base(annotation)
    if typing.get_origin(kind) is typing.Literal:
        names = [str(a) for a in typing.get_args(kind)]
        return st.sampled_from(names + [n.upper() for n in names] + ["nosuch", ""] + NASTY)
    if kind in (int, float):
        edges = []
        for b in _bounds(field):
            edges += [b, b - 1, b + 1, b - 1e-9, b + 1e-9, -b, b * 1e6]
        numbers = st.sampled_from([str(e) for e in edges] + ["0", "-1", "1", "2", "3", "1000000000000", "-1e300",
                                                             "1e-320", "0.5", "2.5"])
        return st.one_of(numbers, st.sampled_from(NASTY), st.integers(-10 ** 15, 10 ** 15).map(str))
    return st.one_of(st.sampled_from(NASTY + ["mnist5k", "digits", "mlp", "nosuch"]), st.text(max_size=8))


def flag_values(name: str, field) -> st.SearchStrategy[str]:
    annotation = _base(field.annotation)
    if typing.get_origin(annotation) in (list, tuple):
        inner = typing.get_args(annotation)[0]
        items = scalar_values(inner, field)
        return st.one_of(st.lists(items, max_size=3).map(",".join), st.sampled_from(["", ",", ",,", "1,,2"]))
    return scalar_values(annotation, field)


def fuzzable(study: str) -> list[str]:
    return [n for n, f in STUDIES[study].Spec.flat_fields().items()
            if n not in ("preset",) and _base(f.annotation) is not bool]


@st.composite
def cli_cases(draw):
    study = draw(st.sampled_from(sorted(STUDIES)))
    spec_cls = STUDIES[study].Spec
    names = draw(st.lists(st.sampled_from(fuzzable(study)), min_size=1, max_size=2, unique=True))
    args = ["run", study, "--preset", "smoke"]
    for name in names:
        args += ["--" + name.replace("_", "-"), draw(flag_values(name, spec_cls.flat_fields()[name].info))]
    return args


def _fuzz_flags(args, capsys):
    out = tempfile.mkdtemp(prefix="genlab-fuzz-")
    try:
        code, err = run_cli(args + ["--out", os.path.join(out, "run"), "--quiet"], capsys, budget=BUDGET_SECONDS)
        assert_clear(code, err)
        OUTCOMES[str(code)] = OUTCOMES.get(str(code), 0) + 1
        manifest = Path(out) / "run" / "manifest.json"
        if code != 0 and manifest.exists():
            assert json.loads(manifest.read_text())["status"] != "complete"
    finally:
        shutil.rmtree(out, ignore_errors=True)


COMMON = dict(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


@settings(max_examples=25, **COMMON)
@given(args=cli_cases())
def test_fuzzed_flags_end_in_a_clear_error_or_a_run(args, capsys):
    _fuzz_flags(args, capsys)


@pytest.mark.slow
@settings(max_examples=80, **COMMON)
@given(args=cli_cases())
def test_fuzzed_flags_bigger_profile(args, capsys):
    _fuzz_flags(args, capsys)


# ----- non-finite floats ----------------------------------------------------------------------------
def _float_fields():
    for study in sorted(STUDIES):
        for name, field in STUDIES[study].Spec.flat_fields().items():
            kind = _base(field.annotation)
            inner = typing.get_args(kind)[0] if typing.get_origin(kind) in (list, tuple) else kind
            if _base(inner) is float:
                yield study, name


def _non_finite_cases():
    for study, name in _float_fields():
        for value in ("nan", "inf", "-inf"):
            yield pytest.param(study, name, value)


@pytest.mark.parametrize("study,name,value", list(_non_finite_cases()))
def test_non_finite_floats_are_refused_naming_the_field(study, name, value):
    spec_cls = STUDIES[study].Spec
    annotation = _base(spec_cls.flat_fields()[name].annotation)
    given_value = [value] if typing.get_origin(annotation) in (list, tuple) else value
    with pytest.raises(UserError, match=f"'{name}.*finite"):
        resolve_spec(spec_cls, "smoke", None, {name: given_value})


# ----- random TOML ------------------------------------------------------------------------------------
def _config_case(payload: bytes, capsys):
    folder = Path(tempfile.mkdtemp(prefix="genlab-toml-"))
    try:
        (folder / "c.toml").write_bytes(payload)
        code, err = run_cli(["run", "randomization", "--preset", "smoke", "--config", str(folder / "c.toml"),
                             "--out", str(folder / "run"), "--quiet"], capsys, budget=BUDGET_SECONDS)
        assert_clear(code, err, "c.toml" if code == 2 else None)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


toml_like = st.lists(st.tuples(st.sampled_from(["epochs", "lr", "widths", "seeds", "nosuch", "preset", "[x]", "a.b"]),
                               st.sampled_from(["= 1", "= -1", "= nan", "= inf", '= "x"', "= [1, 2]", "= []", "=",
                                                "= 1e400", "= {a = 1}", "= true", '= "smoke"'])),
                     max_size=4).map(lambda kv: "\n".join(f"{k} {v}" for k, v in kv).encode())


@settings(max_examples=15, **COMMON)
@given(payload=st.one_of(toml_like, st.text(max_size=60).map(str.encode)))
def test_random_text_as_config_ends_in_a_clear_error_or_a_run(payload, capsys):
    _config_case(payload, capsys)


@settings(max_examples=15, **COMMON)
@given(payload=st.binary(min_size=1, max_size=64).filter(lambda b: not _utf8(b)))
def test_random_bytes_as_config_are_refused_naming_the_file(payload, capsys):
    _config_case(payload, capsys)


def _utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


# ----- damaged run folders ----------------------------------------------------------------------------
RUN = ["run", "randomization", "--preset", "smoke", "--epochs", "2", "--seeds", "0,1", "--quiet"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "randomization"
    assert main(RUN + ["--out", str(out)]) == 0
    return out


def damage(path: Path, how: str) -> None:
    data = path.read_bytes() if path.exists() else b""
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(bytes((i * 97 + 13) % 256 for i in range(max(64, len(data) // 3))))
    elif how == "not-utf8":
        path.write_bytes(b"\xff\xfe\x00" + data[3:])
    elif how == "mistyped":
        path.write_text({".json": "[1, 2, 3]\n", ".csv": "a,b\n1,2\n", ".toml": "epochs = 'x'\n"}.get(path.suffix, "x"))
    elif how == "deleted":
        path.unlink()


FILES = ["manifest.json", "results.csv", "curves.csv", "spec.toml", "units/seed0/done.json",
         "figures/randomization.png", "units/seed1/snapshot.pt"]
DAMAGES = ["truncated", "empty", "garbage", "not-utf8", "mistyped", "deleted"]
DEFAULT_CASES = [(f, "garbage") for f in FILES] + [("manifest.json", "mistyped"), ("units/seed0/done.json", "mistyped"),
                                                   ("results.csv", "truncated")]
SLOW_CASES = [(f, d) for f in FILES for d in DAMAGES if (f, d) not in DEFAULT_CASES]


def _damaged_copy(finished: Path, tmp_path: Path, relative: str, how: str) -> Path:
    run = tmp_path / "rep" / "randomization"
    shutil.copytree(finished, run)
    if relative.endswith("snapshot.pt"):   # a unit interrupted after its snapshot: resume reads the file
        (run / "units" / "seed1" / "done.json").unlink()
        manifest = json.loads((run / "manifest.json").read_text())
        manifest.update(status="interrupted", units_done=["seed0"])
        (run / "manifest.json").write_text(json.dumps(manifest))
        import torch

        torch.save({"keys": ["x"], "params": {}}, run / relative)
    damage(run / relative, how)
    return run


def _check_damaged_folder(finished, tmp_path, relative, how, capsys):
    clean = (finished / "results.csv").read_bytes()
    run = _damaged_copy(finished, tmp_path, relative, how)
    name = Path(relative).name
    code, err = run_cli(["report", str(run.parent)], capsys)
    assert_clear(code, err)
    if code == 2:   # names the damaged file, or the run's state that keeps it out of the report
        assert name in err or "manifest.json" in err or "is not complete" in err, err
    else:
        assert (run.parent / "report.html").exists()
    code, err = run_cli(RUN + ["--out", str(run)], capsys)
    assert_clear(code, err)
    if code == 2:
        assert name in err and ("--force-new" in err or "delete it" in err), err
        if name != "manifest.json":
            assert json.loads((run / "manifest.json").read_text())["status"] == "failed"
        code, err = run_cli(RUN + ["--out", str(run), "--force-new"], capsys)   # the advised way out
        assert code == 0, err
    assert (run / "results.csv").read_bytes() == clean     # a correct run: the uninterrupted numbers
    OUTCOMES[f"damaged:{code}"] = OUTCOMES.get(f"damaged:{code}", 0) + 1


@pytest.mark.parametrize("relative,how", DEFAULT_CASES)
def test_a_damaged_run_folder_ends_in_a_clear_error_or_a_correct_run(relative, how, finished, tmp_path, capsys):
    _check_damaged_folder(finished, tmp_path, relative, how, capsys)


@pytest.mark.slow
@pytest.mark.parametrize("relative,how", SLOW_CASES)
def test_every_damage_to_a_run_folder(relative, how, finished, tmp_path, capsys):
    _check_damaged_folder(finished, tmp_path, relative, how, capsys)


def test_report_on_a_corrupt_results_table_names_it_and_the_way_out(finished, tmp_path, capsys):
    run = _damaged_copy(finished, tmp_path, "results.csv", "not-utf8")
    code, err = run_cli(["report", str(run.parent)], capsys)
    assert code == 2 and "Traceback" not in err
    assert str(run / "results.csv") in err and "re-run" in err and "--force-new" in err
    assert len(err.strip().splitlines()) == 1
