"""What the notebooks use: plots (:mod:`.plots`), the exercises' self-checks (:mod:`.exercises`) and the
teachers' worked answers (:mod:`.exercise_solutions`)."""
