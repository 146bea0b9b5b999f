"""The docs' generated pages: written from where the facts live, never typed by hand.

- the configuration reference from the parameter schema (tasks/infra/config.py) and params.yaml;
- the command-line reference from the `kdistill` argument parser (tasks/cli.py);
- the deployments and schedule tables from flows/serve.py and params.yaml;
- the results pages and README's headline table from reports/bench/*.json and reports/sweep/.

`python -m docs.gen` writes them; `python -m docs.gen --check` exits 1 naming each stale file
(tests/code/test_docs.py runs the same comparison). Blocks inside hand-written pages sit between
`<!-- gen:NAME:begin -->` and `<!-- gen:NAME:end -->` and are replaced whole.
"""
