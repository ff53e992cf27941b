"""The `jumplora` sub-commands, one module each: `run`, `data`, `report`, `plot`, `ella_lambda`, `compact`, `export`,
`forget`.

Each exposes `register(subparsers)`; `jumplora.cli` imports only the one asked for. A command parses
its arguments and prints; the work is the library's (`jumplora.train`, `jumplora.data`,
`jumplora.analysis`, `jumplora.export`, `jumplora.forget`). What the analysis commands share is in `common`.
"""
