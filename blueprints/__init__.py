"""HTTP in and out: thin views over services/ (routes.py builds the tree, context.py is what
views share)."""
