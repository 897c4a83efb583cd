"""Method studies: several arms (method x preference signal, optionally a stage-2 round) trained from the same
stage-1 candidates and evaluated with the same seeds, samples and benchmarks, in one report
(``python -m common study``)."""
