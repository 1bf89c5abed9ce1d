"""Governance: who may do what, the policy gates, and the tamper-evident audit log.

Import the modules directly (``scoregate.governance.audit``, ``.webhooks``, ...); the
package imports nothing itself so that the registry can use any one of them cheaply.
"""
