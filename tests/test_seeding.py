"""Seed derivations: stable values (results depend on them), distinct streams, and one place for them."""
import ast
import hashlib
from pathlib import Path

import numpy as np
import torch

from genlab.seeding import derive_seed, seeded_generator, spawn_seeds

SRC = Path(__file__).resolve().parents[1] / "src" / "genlab"


def test_derive_seed_is_sha256_of_the_joined_parts():
    # the values the studies' stored results were made with: a change here changes every study's numbers
    assert derive_seed(0, "labels", 0.2) == 3547300616
    assert derive_seed("mnist5k", "validation") == 101098408
    assert derive_seed(3, 1, "reinit") == 1724547149
    digest = hashlib.sha256(b"5:x:1.5").digest()
    assert derive_seed(5, "x", 1.5) == int.from_bytes(digest[:4], "little")
    assert 0 <= derive_seed("anything") < 2 ** 32


def test_derived_seeds_differ_by_name_and_order():
    seeds = {derive_seed(s, name) for s in range(50) for name in ("labels", "init", "order")}
    assert len(seeds) == 150
    assert derive_seed(1, 2) != derive_seed(2, 1)


def test_sequence_streams_match_numpy_and_are_independent():
    assert spawn_seeds(7, 3) == [int(s) for s in np.random.SeedSequence(7).generate_state(3)]
    assert spawn_seeds(7, 3) == [2083679832, 3939563265, 4185785210]
    a = torch.randint(0, 10 ** 6, (3,), generator=seeded_generator(1, 2, 3)).tolist()
    assert a == [716484, 221453, 303582]
    assert a == torch.randint(0, 10 ** 6, (3,), generator=seeded_generator(1, 2, 3)).tolist()
    assert a != torch.randint(0, 10 ** 6, (3,), generator=seeded_generator(1, 2, 4)).tolist()


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_no_module_hashes_seeds_of_its_own():
    """Seeds come from genlab.seeding (the engine keeps its per-epoch derivation)."""
    offenders = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
                 if "hashlib" in _imports(p) and "sha256(\":\".join" in p.read_text()
                 and p.name != "seeding.py"]
    assert not offenders


def test_studies_do_not_import_each_other():
    # base (the contract), checks (its conformance check) and cifar (the papers' CIFAR-10 settings table) are
    # shared by every study; the other modules are studies
    studies = {p.stem for p in (SRC / "studies").glob("*.py")} - {"__init__", "base", "checks", "cifar"}
    for path in (SRC / "studies").rglob("*.py"):
        own = path.relative_to(SRC / "studies").parts[0].removesuffix(".py")
        sideways = {m for m in _imports(path) if m.startswith("genlab.studies.")
                    and m.split(".")[2] in studies and m.split(".")[2] != own}
        assert not sideways, f"{path.name} imports {sideways}"
