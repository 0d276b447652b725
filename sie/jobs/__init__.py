"""Offline jobs: scoring whole files of (query, document) pairs (``sie score-file``, ``sie.jobs.score_file``) and
what the Ray integration shares with it (``sie.jobs.scoring``).

Nothing here is imported by ``import sie``: files need pyarrow, which the online paths never load.
"""
