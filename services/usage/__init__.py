"""The usage ledger: one record per finished API request, written in batches to a database
(docs/operations.md "Usage", docs/design.md §10)."""
