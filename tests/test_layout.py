"""The package layout: the public API, and the old module paths that still import after the moves."""
import importlib
import subprocess
import sys
import warnings

import pytest

import genlab
from genlab._moved import MOVED


@pytest.mark.parametrize("package", ["genlab", "genlab.engine", "genlab.data", "genlab.models", "genlab.studies",
                                     "genlab.report"])
def test_every_public_name_resolves(package):
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing


@pytest.mark.parametrize("old,new", sorted(MOVED.items()))
def test_old_path_is_the_moved_module_itself(old, new):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        aliased = importlib.import_module(old)
    assert aliased is importlib.import_module(new)
    parent, _, name = old.rpartition(".")
    assert getattr(importlib.import_module(parent), name) is aliased


def test_old_paths_in_a_fresh_interpreter():
    code = ("import warnings; warnings.simplefilter('ignore')\n"
            "import genlab.pruning as p, genlab.store, genlab.robustness\n"
            "from genlab.intrinsic import intrinsic_dimension, SearchSettings\n"
            "from genlab.runner import run_study\n"
            "import genlab.probes.lottery, genlab.run.store, genlab.probes.intrinsic_dim\n"
            "assert p is genlab.probes.lottery and genlab.store is genlab.run.store\n"
            "assert intrinsic_dimension is genlab.probes.intrinsic_dim.intrinsic_dimension\n"
            "assert p.Mask is genlab.Mask\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_monkeypatching_the_old_path_patches_the_module(monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import genlab.store as old
    from genlab.run import store

    monkeypatch.setattr(old, "atomic_write_text", lambda *a: "patched")
    assert store.atomic_write_text() == "patched"


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nosuch'"):
        genlab.nosuch  # noqa: B018
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("genlab.nosuch")
