"""Running studies: run folders (:mod:`~genlab.run.store`), the unit loop with resume
(:mod:`~genlab.run.runner`) and where units execute (:mod:`~genlab.run.executors`)."""
