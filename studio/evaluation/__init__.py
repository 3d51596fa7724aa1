"""Evaluation: benchmarks, held-out data and judged comparisons, from local files only.

    base.py           the evaluator contract (a plugin registers ``Evaluator`` objects) and its context
    models.py         ``EvalModel``: a local model (embedded, run, folder, hub id) or an OpenAI-compatible
                      endpoint, with a fingerprint; log-likelihoods, batched generation and chat
    loglikelihood.py  the fast scorer: lm-eval's tokenisation, shared-context KV reuse, batching by length
    generation.py     batched greedy/sampled generation with left padding and stop strings
    sandbox.py        runs model-written programs in a limited subprocess (HumanEval)
    stats.py          means, standard errors as lm-eval reports them, pass@k, paired tests
    cache.py          per-item results by (model fingerprint, task, config, item): re-runs are free
    runner.py         runs models x tasks, writes the report folder
    overlap.py        how much of a run's training data overlaps each benchmark (the decontamination op)
    judging.py        MT-Bench-style grades and pairwise verdicts through the generation engine
    heldout.py        loss and perplexity on the training mask, reward-model win rates
    reports.py        report folders in the workspace: list, show, compare (deltas, significance, flips)

Nothing here imports Textual; the CLI (``studio eval``) and the TUI (mode 7) call the same services.
"""
