"""Data quality: expectation suites (YAML in ``suites/``) evaluated with Great Expectations on a
pandas view of each batch, with a severity per expectation (warn, quarantine, fail) and a results
history in ``audit.dq_results``.

``suites`` loads and checks the suite files, ``views`` builds the pandas views (pure),
``runner`` evaluates a suite and decides (pure apart from GX), ``results`` shapes the audit rows,
``steps`` holds the thin Prefect tasks the flows call.
"""
