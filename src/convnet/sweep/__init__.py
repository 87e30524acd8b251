"""The sweep: many trials of one config, their records, and what runs next.

* ``settings``: the sweep-level fields (everything under ``config.sweep``; the rest is a trial's config);
* ``trials``: the axes expanded into trials, each with its configuration's identity as data;
* ``store``: the one owner of a sweep directory's layout (results journal, trials' runs, standings);
* ``strategies``: the pure decision rules (a full grid; Pareto pruning at rungs);
* ``driver``: runs a strategy, hands tasks to an executor and records what comes back;
* ``executors``: where trials run (here, or on Ray);
* ``replay``: a decision rule run again on a finished sweep's records.

The report is written by ``convnet.results``.
"""
