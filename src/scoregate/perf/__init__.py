"""Latency profiling (``profile_version``) and load testing (``run_loadtest``)."""

from scoregate.perf.loadtest import LoadTestReport, parse_duration, run_loadtest
from scoregate.perf.profile import ProfileReport, profile_scoring, profile_version

__all__ = ["LoadTestReport", "ProfileReport", "parse_duration", "profile_scoring", "profile_version", "run_loadtest"]
