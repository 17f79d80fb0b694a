"""imgbatch: bulk image processing driven by CSV.

One import namespace: ``imgbatch.api`` (HTTP), ``imgbatch.cli`` (the command line and the
embedded stack), ``imgbatch.worker`` and ``imgbatch.webhooks`` (tasks), ``imgbatch.domain``
(the operations they share), ``imgbatch.models`` (persistence), and the infrastructure below
them. ``docs/architecture.md`` draws the layers.
"""
