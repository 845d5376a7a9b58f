"""The SWR paper's experiments: protocols, their engine, results and figures.

``warm_start``, ``continual``, ``generalization``, ``random_labels``,
``figure1`` and ``beyond_chains`` are the scripts; ``runner`` (a phased
protocol over every method and seed), ``protocols`` (the paper protocols'
flags and coefficients) and ``engine`` what they train with; ``stats``,
``summarize_results`` (one module of ``tables/`` per protocol's tables) and
``plot_results`` turn the JSON in ``results/`` into ``RESULTS.md`` and
``figures/``; ``run_results.sh`` is ``make results``.
"""
