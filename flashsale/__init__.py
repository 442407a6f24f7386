"""Shared names, settings and AWS clients for every flashsale process.

`tasks`, `outbox` and `saga` import from here, never from each other's internals or from
`infra` (which imports Pulumi): one source for names keeps infrastructure and code in step.
"""
