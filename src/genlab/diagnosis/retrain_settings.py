"""The sizes of the retraining a diagnosis does with ``budget="retrain"``.

Every retrained network is a fresh copy of the user's architecture (the factory, seeded per use)
trained through the engine (:func:`genlab.engine.train_models`; BatchNorm statistics exact per
model) with one recipe, genlab's, not the user's: the retrained numbers compare label sets,
subspaces or masks under that one recipe. The sizes keep an MNIST-size model to a few minutes on
a CPU; every report states the settings it used.
"""
from __future__ import annotations

from dataclasses import dataclass

from genlab.errors import UserError

PARTS = ("randomization", "description_length", "intrinsic_dim", "lottery")
"""The retraining experiments a diagnosis can run (``retrain_parts``)."""


@dataclass(frozen=True)
class RetrainSettings:
    """``examples``: training examples (a seeded subset) the description length, intrinsic
    dimension and lottery ticket retrain on (the randomization test uses the whole set);
    ``val_fraction`` of them is held out where a choice is made (stopping epoch, d, nothing is
    chosen on the test set)."""

    examples: int = 1000
    optimizer: str = "adam"
    lr: float = 1e-3
    batch_size: int = 64
    val_fraction: float = 0.2
    first_block: int = 64          # description length: labels sent with the uniform code first
    mdl_epochs: int = 8            # ... epochs per block (at least mdl_min_steps steps)
    mdl_min_steps: int = 50
    id_epochs: int = 6             # intrinsic dimension: epochs of the direct and every subspace run
    id_lr: float = 0.01            # ... direct learning rate (the intrinsic-dim study's; Adam at 1e-3 does not
                                   # reach 90% in 6 epochs below d = 10,000 for a 784-100-10 MLP on 800 digits)
    id_dims: tuple[int, ...] = (10, 40, 160, 640, 2560, 10240)
    id_threshold: float = 0.9
    lottery_epochs: int = 6        # lottery ticket: epochs of every arm from its initialization
    lottery_rate: float = 0.5      # fraction of the remaining weights pruned per round
    lottery_rounds: int = 3        # about 50%, 25%, 12.5% of the weights remain

    def describe(self, part: str) -> str:
        recipe = f"{self.optimizer} lr {self.lr:g}, batch {self.batch_size}"
        if part == "description_length":
            return (f"{recipe}; first block {self.first_block} labels, boundaries doubling; each block's network "
                    f"trained from scratch for {self.mdl_epochs} epochs (at least {self.mdl_min_steps} steps), "
                    f"the stopping epoch chosen on {self.val_fraction:.0%} of the labels already sent")
        if part == "intrinsic_dim":
            return (f"{self.optimizer} lr {self.id_lr:g} (subspaces: lr x sqrt(D/d)), batch {self.batch_size}; "
                    f"{self.id_epochs} epochs per network; one seed; "
                    f"d in {', '.join(map(str, self.id_dims))} (those below D), Fastfood projection; "
                    f"d chosen on a {self.val_fraction:.0%} validation split")
        if part == "lottery":
            return (f"{recipe}; {self.lottery_epochs} epochs per network from its initialization; "
                    f"{self.lottery_rounds} rounds pruning {self.lottery_rate:.0%} of the remaining weights per "
                    f"layer (the output layer half that), survivors reset to the initialization (no rewinding)")
        return recipe


def skipped(reason: str, settings: RetrainSettings, part: str, caveat: str) -> dict:
    """The result of a retraining ``part`` that could not run on this model: the reason, stated where
    its number and its reading would be."""
    return {"skipped": reason, "value": "skipped", "suggests": reason, "settings": settings.describe(part),
            "caveat": caveat}


def checked_parts(parts) -> tuple[str, ...]:
    """The retraining parts asked for, in the order of :data:`PARTS`; a bad name is one line."""
    if isinstance(parts, str):
        parts = [p.strip() for p in parts.split(",") if p.strip()]
    parts = list(parts)
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise UserError(f"retrain parts {', '.join(map(repr, unknown)) or '(none)'}: choose one or more of "
                        f"{', '.join(PARTS)}")
    return tuple(p for p in PARTS if p in parts)


def checked_examples(examples: int) -> int:
    if not isinstance(examples, int) or isinstance(examples, bool) or examples < 200:
        raise UserError(f"retrain_examples={examples!r} must be an integer of at least 200 (the description length "
                        "sends a first block of 64 labels and codes at least one more; validation splits take 20%)")
    return examples
