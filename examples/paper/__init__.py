"""The SWR paper's experiments: protocols, their engine, results and figures.

``warm_start``, ``continual``, ``generalization``, ``random_labels`` and
``figure1`` are the scripts; ``protocols`` and ``engine`` what they train
with; ``stats``, ``summarize_results`` and ``plot_results`` turn the JSON in
``results/`` into ``RESULTS.md`` and ``figures/``; ``run_results.sh`` is
``make results``.
"""
