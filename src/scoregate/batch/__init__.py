"""Batch scoring: files beyond memory, on every core, crash-safe and resumable, on Ray or Spark too.

``plan`` cuts the input into chunks from its metadata, ``chunk`` reads and scores one
the way the server does, ``store`` commits it atomically into the job's folder, ``local``
runs the chunks on a pool of worker processes (``engines``: on Ray or Spark), ``job``
ties them together, and ``service`` records the job in the registry.
"""
